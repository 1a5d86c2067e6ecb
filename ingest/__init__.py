"""Upload pipelines: metadata validation, audio probing and transcoding (ffmpeg), transcript
parsing and redaction, idempotency, and the spool-folder, S3-drop and legacy importers."""
