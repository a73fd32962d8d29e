"""gRPC servicers and HTTP endpoints: thin translation to and from the engine."""
