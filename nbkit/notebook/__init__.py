"""The notebook interface: the ipywidgets model picker, prompt form and gallery, and Colab's shims."""
