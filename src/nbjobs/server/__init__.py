"""The server: HTTP API over the job service, the dispatcher and a backend."""
