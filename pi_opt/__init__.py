"""pi_opt: ReLU-budget optimization for private inference."""
