"""fairclick: email link tracking that asks first. This package holds the command line."""
