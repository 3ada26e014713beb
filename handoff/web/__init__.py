"""The sanic server: the app factory, the end-user and agent channels, the learning API,
sign-in, pages and HTTP plumbing (errors, security headers)."""
