"""CLI verbs; each module exposes `add_parser(subparsers)`."""
