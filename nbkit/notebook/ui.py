"""What notebooks import (`from nbkit import ui`): the model picker, the plain HTML views and the prompt
form, each in its own file (`model_picker`, `html_views`, `form` and its parts), gathered under the one name
that saved notebooks use."""

from nbkit.notebook.form import GenerateForm
from nbkit.notebook.form_fields import FormErrors, FormValues, read_form
from nbkit.notebook.form_progress import event_label
from nbkit.notebook.html_views import (
    ProgressLine,
    caption_html,
    images_html,
    placeholder_png,
    ranking_html,
    score_digits,
    show_images,
    show_ranking,
    show_run,
)
from nbkit.notebook.model_picker import ModelChoice, ModelPicker, model_choices, pick_model

__all__ = ["FormErrors", "FormValues", "GenerateForm", "ModelChoice", "ModelPicker", "ProgressLine",
           "caption_html", "event_label", "images_html", "model_choices", "pick_model", "placeholder_png",
           "ranking_html", "read_form", "score_digits", "show_images", "show_ranking", "show_run"]
