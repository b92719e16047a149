"""TensorFlow Serving: the model server configuration and a REST/gRPC client for exported models."""
