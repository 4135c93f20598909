"""Each chapter's exercises, one module a chapter (named as the chapter), each with its EXERCISES:
{"chapter.name": Exercise}. glassformer.learn.exercises gathers them."""
