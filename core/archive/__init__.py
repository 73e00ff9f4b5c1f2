"""Image archives opened read-only, in place: an engine over a docker-archive, an OCI
archive or an OCI layout folder that never copies them into a store."""
