"""Small helpers shared by stages."""
