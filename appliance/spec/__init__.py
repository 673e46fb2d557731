"""embed.toml: its schema, its loader and what a model folder says about itself."""
