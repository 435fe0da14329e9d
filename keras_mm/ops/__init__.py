"""Pure TensorFlow functions shared by towers, preprocessors and export."""
