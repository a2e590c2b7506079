"""Training and evaluation of CQA-Face."""
