"""The course: the articles' chapters as notebooks, their exercises and the checks of answers.

In a chapter (or any notebook):

    from glassformer import learn
    learn.check("neurons.first_neuron", 32 * 0.10 + 107 * -0.29 + 56 * -0.07 + 11.2 * 0.46)
    learn.show(en="The loss fell.", zh="损失下降了。")

The chapters live in glassformer/learn/chapters/ (build.py runs them and writes their pages);
problems/CHAPTER.py holds each chapter's exercises: question, hints and the library's own answer.
"""

from glassformer.learn.exercises import all_exercises, check, language, show

__all__ = ["all_exercises", "check", "language", "show"]
