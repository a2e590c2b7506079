"""The `cqaface` command (also `python -m identify.cli`): `main.py` builds the parser and turns
known failures into one line and an exit status; `core.py` holds the gallery and search
commands, `web.py` serve, users and API keys, and `demo.py` the helpers of `make demo`;
`embedder`, `trainer` and `workers` add their own subcommands. Handlers import heavy modules
when they run, so that `cqaface --help` stays instant. It may import anything; nothing imports
it back."""
