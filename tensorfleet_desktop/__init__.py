"""TensorFleet controller, CLI, SDK and desktop app."""
