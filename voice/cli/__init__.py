"""The command-line layer: argparse parsers and handlers for every `parley` subcommand.

The only place that reads argparse Namespaces; handlers build typed configs and call the packages.
"""
