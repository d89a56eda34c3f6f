"""Process runtime: configuration, composition root, server lifecycle, CLI."""
