"""What atlas knows of a model without Keras: layer facts, content addresses, label spaces."""
