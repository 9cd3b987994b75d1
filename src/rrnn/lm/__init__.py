"""Language modelling with restricted recurrent layers: data, model, training,
evaluation and generation."""
