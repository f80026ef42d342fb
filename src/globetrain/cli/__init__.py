"""The ``globetrain`` command and its subcommands (one module per subcommand)."""
