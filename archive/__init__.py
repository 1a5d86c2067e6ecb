"""The archive's core: settings, index tables and queries, audit log, tokens, and the service
that puts and gets items (index and encrypted store together). See DESIGN.md."""
