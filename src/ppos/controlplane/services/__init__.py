"""The control plane's gRPC services, one package each."""
