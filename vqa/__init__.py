"""Visual question answering on top of ``captioning``'s foundations: a question RNN fused with
the CNN grid by concatenation, element-wise product (Antol et al. 2015, "VQA") or
question-guided attention (Kazemi & Elqursh 2017, "Show, Ask, Attend, and Answer"), and a
classifier over the most frequent answers, scored with the official VQA accuracy.
"""
