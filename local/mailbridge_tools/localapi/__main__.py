"""`python -m mailbridge_tools.localapi`: the local run (`make run`, `make sandbox`)."""

from .cli import main

main()
