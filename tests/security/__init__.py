"""Security tests: the authorization matrix of every route, page headers, templates without
inline script or style, token handling, and the sign-in rate limit (docs/security.md names
what each one shows)."""
