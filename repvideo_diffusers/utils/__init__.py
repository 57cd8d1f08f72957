"""Small helpers shared by the library, its tools and its command line: atomic writes, dtype and device names,
video files, plots. Nothing here knows about RepVideo or a model family."""
