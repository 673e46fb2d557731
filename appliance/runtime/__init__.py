"""Process side: `appliance serve` (compile + supervisord) and the programs supervisord runs."""
