"""The desktop app (PySide6 + pyqtgraph): the only Qt code in TensorFleet."""
