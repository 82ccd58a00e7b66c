"""The gRPC edge: conversions, the one server factory, the one channel factory, the servicer."""
