"""The web app's parts, put together by the app factory (`identify/app.py`): `wiring.py` plugs in
the error answers (`http_errors.py`), the `api.py`, `admin.py` and `admin_accounts.py` blueprints
(pages under `templates/` and `static/`), request metrics, rate limits and security headers.
`common.py` is what the API and the UI share; `auth.py` and `csrf.py` guard them; `accounts.py`
holds the rules for users and API keys (the CLI's too), `audit_log.py` writes the audit log,
`key_usage.py` counts requests per key; `state.py` is the app's one web state object (those
counts, metrics, rate limits, live-stream slots, sessions); `enrolment_jobs.py`,
`job_events.py`, `status.py` and `overlay.py` serve single pages and routes. It may import
`gallery/`, `search/`, `identify.services`, `identify.settings` and `embedder`; never `workers`
(jobs go to them through `services().submit`) nor the app factory: the blueprints take the
process's services from the app (`identify.services.services()`)."""
