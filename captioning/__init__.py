"""Image captioning with soft attention (Xu et al. 2015, "Show, Attend and Tell").

The shared foundations live here too (encoder registry, vocabulary, attention, checkpoint
format, training loop, visualisation); ``vqa`` builds on them.
"""
