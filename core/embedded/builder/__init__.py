"""The builder: Dockerfile steps, cache decisions, COPY/ADD, RUN."""
