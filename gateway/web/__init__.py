"""The pages employees see and the HTTP handlers behind the gateway's URLs."""
