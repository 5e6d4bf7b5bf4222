"""What notebooks import: the model picker, the plain HTML views and the prompt form, each in its own
file (`model_picker`, `views`, `form`)."""

from nbkit.notebook.form import FormValues, GenerateForm, TimeLeft, progress_text, read_form
from nbkit.notebook.model_picker import ModelChoice, ModelPicker, model_choices, pick_model
from nbkit.notebook.views import (
    caption_html,
    images_html,
    placeholder_png,
    ranking_html,
    score_digits,
    show_images,
    show_ranking,
    show_run,
)

__all__ = ["FormValues", "GenerateForm", "ModelChoice", "ModelPicker", "TimeLeft", "caption_html",
           "images_html", "model_choices", "pick_model", "placeholder_png", "progress_text", "ranking_html",
           "read_form", "score_digits", "show_images", "show_ranking", "show_run"]
