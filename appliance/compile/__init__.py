"""embed.toml -> Triton model repository + gateway settings."""
