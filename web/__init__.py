"""The HTTP face of the archive: app factory, routes, auth, errors, OpenAPI and pages."""
