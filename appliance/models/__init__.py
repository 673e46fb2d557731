"""Model folders: fetch one from the Hugging Face Hub (`download`) and check one (`verify`)."""
