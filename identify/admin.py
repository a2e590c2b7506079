from flask import Blueprint

admin = Blueprint("admin", __name__)
