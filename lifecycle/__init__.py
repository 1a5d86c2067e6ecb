"""Lifecycle: retention policies, legal holds, the purge worker, the sweeper and the scrub."""
