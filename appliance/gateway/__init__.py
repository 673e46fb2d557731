"""The HTTP face: Litestar app factory, routes, auth and the error table."""
