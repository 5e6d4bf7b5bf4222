"""Writes the Colab notebooks in this folder. Edit this file, not the .ipynb files, then run

    python notebooks/make_notebooks.py

The same script gives the same bytes, so the committed notebooks are checked against it
(tests/notebook/test_notebooks.py). The repository's address is kept here, in REPOSITORY, only.

Conventions: the first cell holds the "Open in Colab" badge and says what the notebook does;
settings are Colab form fields (`NAME = value  #@param ...`, which the tests rewrite to point
at tiny models); code cells call only nbkit (and display/print), except the install cell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPOSITORY = "https://github.com/nbkit/nbkit"
BRANCH = "main"
HERE = Path(__file__).resolve().parent
SOURCE_FOLDER = "nbkit-src"  # not "nbkit": a folder of that name in the working directory would
                             # be imported as an empty namespace package instead of the library


def colab_url(notebook: str) -> str:
    owner_and_name = REPOSITORY.removeprefix("https://github.com/").removesuffix(".git").strip("/")
    return f"https://colab.research.google.com/github/{owner_and_name}/blob/{BRANCH}/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


def link(notebook: str) -> str:
    """A link that works where the notebook runs: the file beside it (JupyterLab, Notebook, VS Code), and
    the same notebook opened in Colab (where a relative link leads nowhere)."""
    return f"[{notebook.removesuffix('.ipynb')}]({notebook}) ([in Colab]({colab_url(notebook)}))"


# ---------------------------------------------------------------- cells


def md(text: str):
    return new_markdown_cell(dedent(text).strip())


def code(text: str, form: bool = False):
    """A code cell; `form`: Colab shows its form fields and hides the code (one click shows it).
    A line `{NAME}` is replaced by the snippet SNIPPETS[NAME] (after dedenting)."""
    source = dedent(text).strip()
    for name, snippet in SNIPPETS.items():
        source = source.replace("{" + name + "}", dedent(snippet).strip())
    cell = new_code_cell(source)
    if form:
        cell.metadata["cellView"] = "form"
    return cell


def intro(notebook: str, title: str, text: str):
    return md(f"{badge(notebook)}\n\n# {title}\n\n{dedent(text).strip()}")


def install():
    return code(f"""
        #@title Install nbkit (skipped when it is already installed)
        import importlib
        import importlib.util
        import os
        import sys

        spec = importlib.util.find_spec("nbkit")
        if spec is None or spec.origin is None:  # not installed (a bare folder named nbkit does not count)
            !test -d {SOURCE_FOLDER} || git clone -q {REPOSITORY} {SOURCE_FOLDER}
            !bash {SOURCE_FOLDER}/setup_colab.sh
            sys.path.insert(0, os.path.abspath("{SOURCE_FOLDER}"))  # this kernel started before the install
            importlib.invalidate_caches()

        import nbkit

        print("nbkit", nbkit.__version__)
        """, form=True)


def show_results():
    """The cell after a prompt form: widgets vanish from a saved notebook, plain output stays."""
    return code("""
        #@title Show the results as plain images (these stay in the saved notebook)
        #@markdown Run this after a run in the form above has ended.
        form.show_results()
        """)


def model_and_load():
    """The model's form fields, and the cell that loads it (`load(name)` for the form's model picker)."""
    return [code("""
        #@title Model
        {MODEL_FIELDS}
        DTYPE = "auto"  #@param ["auto", "bfloat16", "float16", "float32"]
        SAVE_TO_DRIVE = True  #@param {type:"boolean"}
        """, form=True), code("""
        #@title Load the model
        from nbkit import Pipeline, colab, runs, ui

        drive = colab.mount_drive() if SAVE_TO_DRIVE else None
        out = drive / "nbkit" / "outputs" if drive else colab.output_root()
        cache = colab.model_cache()
        colab.enable_widgets()

        def load(model):
            return Pipeline.from_pretrained(
                model, VQGAN, dtype=None if DTYPE == "auto" else DTYPE, cache=cache,
                compilation_cache=drive / "nbkit" / "jax-cache" if drive else None)

        pipe = load(MODEL)
        print(f"{pipe.name} loaded (model cache: {cache}); runs are saved in {out}")
        """)]


def next_step(text: str):
    return md(f"**Next:** {dedent(text).strip()}")


def notebook(cells: list):
    nb = new_notebook(cells=cells, metadata={
        "accelerator": "GPU",                      # Colab opens it on a GPU runtime
        "colab": {"provenance": [], "gpuType": "T4", "toc_visible": True},
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    for index, cell in enumerate(nb.cells):        # fixed ids: the same script writes the same bytes
        cell.id = f"cell-{index:02d}"
    return nb


# Form fields that several notebooks share (`#@markdown` lines are shown in the form as text).
SNIPPETS = {
    "MODEL_FIELDS": """
        #@markdown **Model**: `mini` is quick and fits anywhere; `mega` makes better images (a 10 GB download,
        #@markdown ~6.4 GiB in 16 bits: fits a T4); `mega-fp16` is Mega as a 4.9 GB download from W&B (needs
        #@markdown `pip install wandb`). A model folder (e.g. on Drive) or a hub id `org/name` works too.
        MODEL = "mini"  #@param ["mini", "mega", "mega-fp16"] {allow-input: true}
        VQGAN = "vqgan"  #@param {type:"string"}
        """,
    "SAMPLING_FIELDS": """
        #@markdown **Sampling** (the official notebook's: temperature 1, top-k 50, top-p 1 = off,
        #@markdown condition scale 10):
        TEMPERATURE = 1.0  #@param {type:"slider", min:0.1, max:2.0, step:0.05}
        TOP_K = 50  #@param {type:"integer"}
        TOP_P = 1.0  #@param {type:"slider", min:0.05, max:1.0, step:0.05}
        CONDITION_SCALE = 10.0  #@param {type:"slider", min:0.0, max:20.0, step:0.5}
        """,
    "UPSCALER_FIELD": ('UPSCALER = "esrgan-x4"  #@param ["esrgan-x4", "esrgan-anime", "esrgan-x2", '
                       '"esrgan-fast"] {allow-input: true}'),
}


# ---------------------------------------------------------------- notebooks


def quickstart():
    name = "00_quickstart.ipynb"
    return notebook([
        intro(name, "nbkit quickstart: prompt → images on Drive, best first", """
            Everything in one notebook: install nbkit, mount Google Drive, load DALL·E mini or Mega,
            turn a few prompts into images saved on Drive (each PNG keeps its prompt, seed and settings),
            and rank them with CLIP. Run the cells top to bottom; change the fields in the forms first.
            """),
        install(),
        code("""
            #@title Settings
            {MODEL_FIELDS}
            PROMPTS = ["sunset over a lake in the mountains", "an avocado armchair"]  #@param {type:"raw"}
            N_IMAGES = 4  #@param {type:"slider", min:1, max:16, step:1}
            #@markdown **Seed**: -1 draws a new one each run (it is printed, and saved in every PNG).
            SEED = -1  #@param {type:"integer"}
            #@markdown **Rank** each prompt's images with a CLIP model, best first:
            RERANK = True  #@param {type:"boolean"}
            CLIP = "clip-b32"  #@param ["clip-b32", "clip-l14"] {allow-input: true}
            """, form=True),
        code("""
            #@title Mount Drive and load the model (downloads once into Drive's nbkit/models)
            from nbkit import Generate, Pipeline, colab, hub, pictures, runs, ui

            drive = colab.mount_drive()
            colab.enable_widgets()
            pipe = Pipeline.from_pretrained(MODEL, VQGAN, cache=colab.model_cache(),
                                            compilation_cache=drive / "nbkit" / "jax-cache")
            """),
        code("""
            #@title Generate and save to Drive
            spec = Generate(prompts=PROMPTS, n_images=N_IMAGES, seed=None if SEED < 0 else SEED)
            run = runs.save_run(pipe, spec, drive / "nbkit" / "outputs",
                                view=ui.ProgressLine())      # the stages, as they go
            folder, result = run.folder, run.generation
            print(f"seed {result.seed}, {result.timings['total']:.1f} s, saved in {folder.path}")
            ui.show_run(folder)
            """),
        code("""
            #@title Rank each prompt's images with CLIP, best first
            if RERANK:
                from nbkit.output.rerank import Reranker

                reranker = Reranker.from_folder(hub.fetch(CLIP, cache=colab.model_cache()))
                ranking = pictures.rerank_folder(folder.path, reranker)
                ui.show_ranking(ranking, folder.path)
            """),
        md("""
            ## More prompts: the form
            Type prompts (one per line), set the options and click **Generate**; the images appear as they
            form and are saved on Drive too. **Stop** keeps the images already finished.
            """),
        code("""
            #@title Show the prompt form
            form = ui.GenerateForm(pipe, out=drive / "nbkit" / "outputs")
            display(form)
            """),
        show_results(),
        next_step(f"""
            the step-by-step notebooks explain each part: {link("01_install.ipynb")},
            {link("02_pick_model.ipynb")},
            {link("03_generate.ipynb")}, {link("04_save_to_drive.ipynb")}, {link("05_rerank.ipynb")}.
            """),
    ])


def install_step():
    name = "01_install.ipynb"
    return notebook([
        intro(name, "1 · Install nbkit", """
            Installs nbkit and what it needs on this runtime (it keeps Colab's own jax when it fits the GPU or
            TPU), then shows which devices it found and which model fits them. For a GPU or TPU, pick it first
            under *Runtime → Change runtime type*.
            """),
        install(),
        code("""
            #@title What this runtime has
            from nbkit.generation.device import detect

            print(detect().summary())
            """),
        next_step(f"""{link("02_pick_model.ipynb")}: choose a model and download it to Drive."""),
    ])


def pick_model_step():
    name = "02_pick_model.ipynb"
    return notebook([
        intro(name, "2 · Pick a model and download it to Drive", """
            Shows the models with their download size, the memory they need and whether they fit this device,
            then downloads the one you choose into the model cache, `MyDrive/nbkit/models` on Colab, so that
            the next session (and the other notebooks) find it there and download nothing. Outside Colab the
            cache is the command line's and the server's, `~/.cache/nbkit/models` (or `$NBKIT_CACHE`).
            """),
        install(),
        code("""
            #@title Choose a model (the largest that fits is selected)
            from nbkit import colab, hub, ui

            colab.enable_widgets()
            picker = ui.pick_model()
            """),
        code("""
            #@title Download it (and the VQGAN and CLIP models) into the cache on Drive
            #@markdown **Model**: blank for the one chosen above; or a name, a folder, a hub id `org/name`,
            #@markdown a W&B artifact.
            MODEL = ""  #@param {type:"string"}
            VQGAN = "vqgan"  #@param {type:"string"}
            #@markdown **CLIP**, to rank images in 05_rerank:
            DOWNLOAD_CLIP = True  #@param {type:"boolean"}
            CLIP = "clip-b32"  #@param ["clip-b32", "clip-l14"] {allow-input: true}

            drive = colab.mount_drive()
            cache = colab.model_cache()
            for name in [MODEL or picker.value, VQGAN] + ([CLIP] if DOWNLOAD_CLIP else []):
                print(f"{name}: {hub.fetch(name, cache=cache)}")
            """),
        next_step(f"""{link("03_generate.ipynb")}: type prompts and watch the images appear."""),
    ])


def generate_step():
    name = "03_generate.ipynb"
    return notebook([
        intro(name, "3 · Generate images", """
            Loads the model (from the cache on Drive when 02_pick_model downloaded it there) and shows the
            prompt form: type prompts, click **Generate**, watch the images form. Each run is saved in a
            folder on Drive. The last cells do the same from code, with the settings in their form.
            """),
        install(),
        *model_and_load(),
        md("""
            ## The prompt form
            One prompt per line. A blank seed draws a new one (it is shown and saved with the images).
            **Stop** ends the run after the current step and keeps the finished images.
            """),
        code("""
            #@title Show the prompt form
            form = ui.GenerateForm(pipe, out=out, load=load, cache=cache)
            display(form)
            """),
        show_results(),
        md("""
            ## Or from code
            The same run without the form: set the fields and run the two cells.
            """),
        code("""
            #@title Settings
            PROMPTS = ["sunset over a lake", "the Eiffel tower on the moon"]  #@param {type:"raw"}
            N_IMAGES = 4  #@param {type:"slider", min:1, max:16, step:1}
            #@markdown **Seed**: -1 draws a new one each run (it is printed, and saved in every PNG).
            SEED = -1  #@param {type:"integer"}
            {SAMPLING_FIELDS}
            """, form=True),
        md("""
            Prompts in Chinese, Japanese, Korean, Russian… are translated to English first (the model
            was trained on English captions); English ones load nothing. Run the cell, check the English,
            and edit `ENGLISH` before drawing if you like. `off` draws the prompts as typed.
            """),
        code("""
            #@title Translate (prompts in any language)
            #@markdown auto, off, or a translator: translate-zh, -ja, -ko, -ru, -ar, -mul.
            TRANSLATE = "auto"  #@param {type:"string"}
            from nbkit.text.translate import translate_prompts

            ENGLISH, _, TRANSLATIONS = translate_prompts(PROMPTS, "", TRANSLATE, cache)
            for typed, english in zip(PROMPTS, ENGLISH, strict=True):
                print(f"{typed!r} → {english!r}" if typed != english else f"{english!r}")
            """, form=True),
        code("""
            #@title Generate, save and show
            from nbkit import Generate, SamplingSettings

            settings = SamplingSettings(TEMPERATURE, TOP_K, TOP_P, CONDITION_SCALE)
            spec = Generate(prompts=ENGLISH, n_images=N_IMAGES, seed=None if SEED < 0 else SEED,
                            translations=TRANSLATIONS, settings=settings)
            run = runs.save_run(pipe, spec, out, view=ui.ProgressLine())
            folder, result = run.folder, run.generation
            print(f"seed {result.seed}, {result.timings['total']:.1f} s, saved in {folder.path}")
            ui.show_run(folder)
            """),
        next_step(f"""
            {link("04_save_to_drive.ipynb")}: what is saved, and making an image again from its PNG.
            """),
    ])


def save_to_drive_step():
    name = "04_save_to_drive.ipynb"
    return notebook([
        intro(name, "4 · Save to Drive, and make an image again from its PNG", """
            Saves a run on Google Drive: one PNG per image that carries its prompt, seed and settings, a grid
            per prompt and a manifest. Then reads one PNG's metadata back and makes the same image again
            from it.
            With a fixed seed, running the generate cell again reopens the same folder and only makes what is
            missing (an interrupted run resumes).
            """),
        install(),
        code("""
            #@title Mount Google Drive
            from nbkit import Generate, Pipeline, colab, pictures, reproduce, runs, ui
            from nbkit.png import read_png_metadata

            drive = colab.mount_drive()
            out = drive / "nbkit" / "outputs"
            """),
        code("""
            #@title Model and prompts
            {MODEL_FIELDS}
            PROMPTS = ["a lighthouse on a cliff at dawn"]  #@param {type:"raw"}
            N_IMAGES = 4  #@param {type:"slider", min:1, max:16, step:1}
            #@markdown **Seed**: fixed here, so that running the next cell again resumes this run
            #@markdown instead of starting anew.
            SEED = 42  #@param {type:"integer"}
            """, form=True),
        code("""
            #@title Load the model and generate into Drive's nbkit/outputs
            pipe = Pipeline.from_pretrained(MODEL, VQGAN, cache=colab.model_cache(),
                                            compilation_cache=drive / "nbkit" / "jax-cache")
            run = runs.save_run(pipe, Generate(prompts=PROMPTS, n_images=N_IMAGES, seed=SEED), out,
                                view=ui.ProgressLine())
            folder, result = run.folder, run.generation
            print(f"{len(result.images)} new image(s) in {folder.path}")
            """),
        code("""
            #@title What was saved
            for path in sorted(folder.path.iterdir()):
                print(f"{path.name:64} {path.stat().st_size / 1024:8.1f} KB")
            """),
        code("""
            #@title One PNG's metadata
            png = folder.path / folder.entries()[-1]["file"]
            metadata = read_png_metadata(png)
            for key, value in metadata.items():
                print(f"{key:16} {value}")
            """),
        code("""
            #@title Make the same image again from the PNG alone
            #@markdown The tokens come out the same: they are the image's identity. The pixels may be one
            #@markdown level (of 255) apart in a few values, as the decoder's sums can run in another order.
            again = reproduce(pipe, png).check()          # an error, saying why, if the tokens differ
            saved = pictures.saved_pixels(folder, metadata["prompt_index"])[metadata["image_index"]]
            levels = abs(again.pixels.astype(int) - saved.astype(int))
            print("Same tokens as the saved image:", again.tokens.tolist() == metadata["tokens"])
            print(f"Pixels within one level of the saved image: {bool(levels.max() <= 1)} "
                  f"({int((levels > 0).sum())} of {levels.size} values one level apart)")
            ui.show_images([saved, again.pixels], captions=["saved on Drive", "made again from its metadata"])
            """),
        next_step(f"""{link("05_rerank.ipynb")}: rank a saved run's images with CLIP."""),
    ])


def rerank_step():
    name = "05_rerank.ipynb"
    return notebook([
        intro(name, "5 · Rerank a saved run with CLIP", """
            Scores each image of a run folder against its prompt with CLIP and shows them best first, with the
            scores. It writes `ranking.json` and a best-first grid per prompt into the folder. It takes the
            newest run in Drive's `nbkit/outputs` unless you name one; make one first with 03_generate.
            """),
        install(),
        code("""
            #@title Which run, which CLIP
            #@markdown **Run folder**: blank for the newest run in `MyDrive/nbkit/outputs`; else its path
            #@markdown (absolute, or inside MyDrive).
            RUN_FOLDER = ""  #@param {type:"string"}
            CLIP = "clip-b32"  #@param ["clip-b32", "clip-l14"] {allow-input: true}
            """, form=True),
        code("""
            #@title Find the run folder
            from nbkit import colab, hub, pictures, ui
            from nbkit.output.rerank import Reranker

            drive = colab.mount_drive()
            outputs = drive / "nbkit" / "outputs"
            if RUN_FOLDER:
                run_folder = drive / RUN_FOLDER          # an absolute path stays as it is
            else:
                manifests = sorted(outputs.glob("*/manifest.jsonl"), key=lambda path: path.stat().st_mtime)
                run_folder = manifests[-1].parent if manifests else None
            if run_folder is None or not (run_folder / "manifest.jsonl").is_file():
                print(f"No run folder found ({RUN_FOLDER or outputs}): run 03_generate first "
                      "(or 00_quickstart), or set RUN_FOLDER to a folder that nbkit saved.")
                run_folder = None
            else:
                print(f"Reranking {run_folder}")
            """),
        code("""
            #@title Rank with CLIP, best first
            if run_folder is None:
                print("Nothing to rerank yet: run 03_generate first.")
            else:
                reranker = Reranker.from_folder(hub.fetch(CLIP, cache=colab.model_cache()))
                ranking = pictures.rerank_folder(run_folder, reranker)
                ui.show_ranking(ranking, run_folder)
                print(f"Saved {run_folder / 'ranking.json'} and a best-first grid per prompt (*_ranked.png).")
            """),
        next_step(f"""
            {link("06_from_an_image.ipynb")}: variations of an image, extending it, filling a region.
            """),
    ])


def from_an_image_step():
    name = "06_from_an_image.ipynb"
    return notebook([
        intro(name, "6 · Start from an image: variations, extending, filling a region", """
            DALL·E mini draws an image as 16 rows of 16 tokens, one after another. Keep some of an image's
            tokens and draw the rest, and you get **variations** (keep the first rows), a picture **extended**
            down or to the right (a panorama, a tall image), or a **region filled** anew. Start from an image
            nbkit saved (its prompt and tokens come from the PNG) or upload any picture. A **negative prompt**
            says what the new parts should not show. Everything is saved next to your other runs.
            """),
        install(),
        *model_and_load(),
        code("""
            #@title The image to start from
            #@markdown **Image**: blank for the newest image saved in the output folder (one is made from
            #@markdown the prompt below if there is none yet), or the path of an image. Tick **Upload** to
            #@markdown pick a file from your computer instead.
            IMAGE = ""  #@param {type:"string"}
            UPLOAD = False  #@param {type:"boolean"}
            #@markdown **Prompt**: what the picture shows. An image nbkit saved brings its own prompt;
            #@markdown any other image needs this one.
            PROMPT = "a lighthouse on a cliff at dawn"  #@param {type:"string"}
            #@markdown **Negative prompt**: what the new parts should not show (blank: none, or the saved
            #@markdown image's own).
            NEGATIVE_PROMPT = ""  #@param {type:"string"}
            #@markdown **Seed**: -1 draws a new one each time (it is saved in every PNG).
            SEED = -1  #@param {type:"integer"}
            """, form=True),
        code("""
            #@title Open it
            from nbkit import Extend, Fill, Generate, Vary, pictures

            seed = None if SEED < 0 else SEED
            negative = NEGATIVE_PROMPT or None
            image_path = colab.upload_image(out) if UPLOAD else (IMAGE or pictures.newest_image(out))
            if image_path is None:
                print("No saved image yet: making one from the prompt.")
                spec = Generate(prompts=[PROMPT], seed=seed, negative_prompt=NEGATIVE_PROMPT)
                first = runs.save_run(pipe, spec, out).folder
                image_path = first.path / first.entries()[0]["file"]
            source = pipe.source(image_path)
            prompt = None if source.prompt else PROMPT        # a saved image's own prompt, else this one
            how = "encoded with the VQGAN encoder" if source.encoded else "tokens from its metadata"
            print(f"{image_path} ({how}); prompt: {prompt or source.prompt!r}")
            ui.show_images([pipe.decode_grid(source.tokens.reshape(16, 16))], captions=["the source"])
            """),
        md("""
            ## Variations
            Keep the first rows of the image and draw the rest anew: 0 rows makes new images from the prompt,
            16 gives the image back. Around 6–10 keeps the composition and changes the details.
            """),
        code("""
            #@title Make variations
            KEEP_ROWS = 8  #@param {type:"slider", min:0, max:16, step:1}
            N_IMAGES = 4  #@param {type:"slider", min:1, max:16, step:1}
            edit = Vary(keep_rows=KEEP_ROWS, n_images=N_IMAGES, seed=seed, prompt=prompt,
                        negative_prompt=negative)
            run = runs.save_run(pipe, edit, out, source=source)
            varied, result = run.folder, run.generation
            print(f"{len(result.images)} variation(s), seed {result.seed}, saved in {varied.path}")
            ui.show_run(varied)
            """),
        code("""
            #@title A seamless picture of the variations
            #@markdown The variations' tokens laid out side by side, COLUMNS to a row, and decoded as ONE
            #@markdown picture, so they blend into each other. COLUMNS 0 picks the most square full grid
            #@markdown (4 → 2×2, 8 → 4×2, 3 → one row); another number must divide the variations evenly.
            COLUMNS = 0  #@param {type:"integer"}
            picture = pictures.save_seamless(pipe, varied, 0, columns=COLUMNS or None)
            print(f"saved {picture}")
            ui.show_images([picture], size=384)
            """),
        md("""
            ## Extend the picture
            Move the picture up (**down**) or left (**right**) by some rows or columns of tokens (16 px
            each) and draw the new band. Repeated, each piece continues the last: a panorama or a tall image,
            decoded as one picture without seams.
            """),
        code("""
            #@title Extend
            DIRECTION = "right"  #@param ["down", "right"]
            ROWS = 8  #@param {type:"slider", min:1, max:15, step:1}
            TIMES = 2  #@param {type:"slider", min:1, max:8, step:1}
            edit = Extend(direction=DIRECTION, rows=ROWS, times=TIMES, seed=seed, prompt=prompt,
                          negative_prompt=negative)
            run = runs.save_run(pipe, edit, out, source=source)        # each piece from the one before
            extended, pieces, stitched = run.folder, run.pieces, run.picture
            print(f"{len(pieces)} piece(s) and the whole picture saved in {extended.path}")
            ui.show_images([stitched], captions=[f"extended {DIRECTION} {TIMES}× by {ROWS}"], size=384)
            """),
        md("""
            ## Fill a region (best effort)
            Draw a rectangle of token cells anew and keep everything else. The model draws in reading order,
            so it cannot see the part of the image below and to the right of the region while drawing it:
            several candidates are drawn and ranked by how likely the model finds the kept tokens after the
            region (higher is a better fit). Rerank them with CLIP (05_rerank) for the best match to the
            prompt.
            """),
        code("""
            #@title Fill
            #@markdown The region in token cells (0–16; 16 px each): rows TOP to BOTTOM-1, columns LEFT to
            #@markdown RIGHT-1.
            TOP = 4  #@param {type:"slider", min:0, max:15, step:1}
            LEFT = 4  #@param {type:"slider", min:0, max:15, step:1}
            BOTTOM = 12  #@param {type:"slider", min:1, max:16, step:1}
            RIGHT = 12  #@param {type:"slider", min:1, max:16, step:1}
            N_CANDIDATES = 4  #@param {type:"slider", min:1, max:16, step:1}
            region = (TOP, LEFT, BOTTOM, RIGHT)
            edit = Fill(region=region, n_images=N_CANDIDATES, seed=seed, prompt=prompt,
                        negative_prompt=negative)
            filled = runs.save_run(pipe, edit, out, source=source).folder
            best_first = sorted(filled.entries(), key=lambda entry: -entry["kept_logprob"])
            print(f"{len(best_first)} candidate(s), best first, saved in {filled.path}")
            ui.show_images([filled.image_path(entry) for entry in best_first],
                           captions=[f"log-probability {entry['kept_logprob']:.1f}" for entry in best_first])
            """),
        next_step(f"""
            {link("07_web_app.ipynb")}: a web page for everyone, served from this runtime.
            """),
    ])


def web_app_step():
    name = "07_web_app.ipynb"
    return notebook([
        intro(name, "7 · A web page for everyone: `nbkit serve`", """
            Starts nbkit's web server inside this notebook and shows its page below: prompts, progress with
            previews, a gallery with variations and extensions, CLIP reranking and the saved runs. Several
            people can use it at once: their requests share the same compiled batches on this one GPU or TPU,
            and every image is saved (with its metadata) as soon as its batch ends. It also answers the
            dalle-playground page's requests, so that page can use this notebook as its backend.
            """),
        install(),
        code("""
            #@title Model and server
            {MODEL_FIELDS}
            CLIP = "clip-b32"  #@param ["clip-b32", "clip-l14", ""] {allow-input: true}
            DTYPE = "auto"  #@param ["auto", "bfloat16", "float16", "float32"]
            SAVE_TO_DRIVE = True  #@param {type:"boolean"}
            #@markdown **Port** of the server inside this runtime; **max images** per request.
            PORT = 8000  #@param {type:"integer"}
            MAX_IMAGES = 16  #@param {type:"integer"}
            #@markdown The page shows below the cell (Colab's port proxy cannot open a tab of its own any
            #@markdown more); tick for a taller one. For a tab or another device: a tunnel, see below.
            TALL_PAGE = False  #@param {type:"boolean"}
            """, form=True),
        code("""
            #@title Start the server (the page appears below)
            from nbkit import colab

            drive = colab.mount_drive() if SAVE_TO_DRIVE else None
            out = drive / "nbkit" / "outputs" if drive else colab.output_root()
            server = colab.serve(MODEL, VQGAN, CLIP or None, out=out, port=PORT, max_images=MAX_IMAGES,
                                 dtype=None if DTYPE == "auto" else DTYPE,
                                 cache=colab.model_cache(), window=TALL_PAGE)
            print(f"nbkit serving on {server.url}; images are saved in {out}")
            """),
        md("""
            ## Reaching it from elsewhere
            The page above reaches the server through Colab's port proxy, which only you can open. To share
            it, or to use [dalle-playground](https://github.com/saharmor/dalle-playground)'s page with it,
            start a tunnel of your choice to port 8000 (for example `cloudflared tunnel --url
            http://127.0.0.1:8000`). Anyone with the tunnel's address can then use your GPU: start the server
            with a token (`colab.serve(..., token="…")`, or `host="0.0.0.0"`, which makes one) and give out
            `https://<tunnel address>/t/<token>` — paste that into the playground page as the backend URL.
            See the README's *Web server* section for the API.
            """),
        code("""
            #@title Stop the server (when you are done)
            #@markdown The batch in flight is finished and saved first.
            server.stop()
            print("stopped")
            """),
        next_step(f"""
            {link("08_upscale.ipynb")}: make a picture 4× larger with Real-ESRGAN.
            """),
    ])


def upscale_step():
    name = "08_upscale.ipynb"
    return notebook([
        intro(name, "8 · Bigger pictures: upscale to 1024 px with Real-ESRGAN", """
            DALL·E mini and Mega draw 256×256 pixels. Real-ESRGAN, run here in JAX from its released weights,
            makes a picture 4× larger (2× with `esrgan-x2`): the newest image saved in the output folder, one
            you name, or one you upload. The upscaled PNG is saved beside its source (which is never replaced)
            with metadata naming the source and the upscaler, so it can be made again. Pictures of any size
            go through in overlapping tiles, so panoramas and extended pictures work too.
            """),
        install(),
        code("""
            #@title Which picture, which upscaler
            #@markdown **Upscaler**: `esrgan-x4` (photos and most pictures), `esrgan-anime` (drawings,
            #@markdown illustrations), `esrgan-x2` (2×), `esrgan-fast` (small and quick), or a weights file.
            {UPSCALER_FIELD}
            #@markdown **Image**: blank for the newest image saved in the output folder, or the path of
            #@markdown an image. Tick **Upload** to pick a file from your computer instead.
            IMAGE = ""  #@param {type:"string"}
            UPLOAD = False  #@param {type:"boolean"}
            SAVE_TO_DRIVE = True  #@param {type:"boolean"}
            """, form=True),
        code("""
            #@title Find the picture
            from nbkit import colab, pictures, reproduce, ui
            from nbkit.generation.upscale import Upscaler

            drive = colab.mount_drive() if SAVE_TO_DRIVE else None
            out = drive / "nbkit" / "outputs" if drive else colab.output_root()
            cache = colab.model_cache()
            image_path = colab.upload_image(out) if UPLOAD else (IMAGE or pictures.newest_image(out))
            if image_path is None:
                print(f"No picture yet in {out}: run 03_generate first (or 00_quickstart), set IMAGE to a "
                      "picture's path, or tick UPLOAD.")
            else:
                print(f"Upscaling {image_path}")
            """),
        code("""
            #@title Upscale, save beside it, show before and after
            if image_path is not None:
                upscaler = Upscaler(UPSCALER, cache=cache)
                upscaled = pictures.upscale_image(upscaler, image_path)
                print(f"saved {upscaled} (×{upscaler.scale})")
                ui.show_images([image_path, upscaled], size=512,
                               captions=["before (256 px, enlarged)", f"after: {upscaler.model_name}"])
            """),
        code("""
            #@title Make it again from its metadata (a check)
            #@markdown Finds the source beside the upscaled PNG (checked by its sha256) and upscales it
            #@markdown again with the same weights: the pixels agree within one level.
            if image_path is not None:
                again = reproduce(None, upscaled, cache=cache)
                print(f"made again: {again.matches} (at most {again.most_levels} level(s) apart)")
            """),
    ])


NOTEBOOKS = {
    "00_quickstart.ipynb": quickstart,
    "01_install.ipynb": install_step,
    "02_pick_model.ipynb": pick_model_step,
    "03_generate.ipynb": generate_step,
    "04_save_to_drive.ipynb": save_to_drive_step,
    "05_rerank.ipynb": rerank_step,
    "06_from_an_image.ipynb": from_an_image_step,
    "07_web_app.ipynb": web_app_step,
    "08_upscale.ipynb": upscale_step,
}


def write_all(folder: Path = HERE) -> list[Path]:
    written = []
    for name, build in NOTEBOOKS.items():
        nb = build()
        nbformat.validate(nb)
        path = Path(folder) / name
        with open(path, "w", encoding="utf-8", newline="\n") as file:
            nbformat.write(nb, file)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: notebooks/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in write_all(args.out):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
