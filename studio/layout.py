"""build_ui(engine) -> gr.Blocks: the tabs, the results column and their events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from engine.expression.presets import load_presets as load_expression_presets
from studio.api_callbacks import ApiCallbacks
from studio.callbacks import StudioCallbacks
from studio.controls import Controls
from studio.expression_callbacks import ExpressionCallbacks
from studio.golden_seeds import FILE_NAME as GOLDEN_SEEDS_FILE
from studio.golden_seeds import GoldenSeeds
from studio.identity_callbacks import IdentityCallbacks
from studio.panels import (
    color,
    expression,
    identity,
    latent,
    loras,
    prompt,
    redux,
    refine,
    regions,
    results,
    settings,
    upscale,
)
from studio.presets import load_presets
from studio.refine_callbacks import RefineCallbacks
from studio.regions_callbacks import RegionsCallbacks
from studio.results_callbacks import ResultsCallbacks
from studio.session import Session
from studio.upscale_callbacks import UpscaleCallbacks

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "studio.css"
# Renders share the GPUs: one at a time per engine, API and buttons alike.
GPU = "gpu"
# Colour re-grades are cheap and never wait behind a render.
COLOR = "color"


def launch_options() -> dict[str, Any]:
    """Arguments for demo.launch() that belong to the look (Gradio 6 moved them there)."""
    return {
        "css_paths": [CSS_PATH] if CSS_PATH.exists() else None,
        "theme": gr.themes.Soft(),
        "max_file_size": "200mb",
    }


def build_ui(engine: Any) -> gr.Blocks:
    """The studio page over `engine` (an engine.engine.Engine, passed in so that this
    package never imports torch)."""
    recipe = engine.default_recipe()
    controls = Controls()
    presets = load_presets()
    expressions = load_expression_presets()
    golden = GoldenSeeds(engine.config.data_dir / GOLDEN_SEEDS_FILE)
    with gr.Blocks(title="Portrait Studio", analytics_enabled=False) as demo:
        state = gr.State(Session(base=recipe))  # deep-copied for each session
        models = engine.models_status()  # read once: the banner and the Model files panel
        _banner(engine, models)
        with gr.Row(equal_height=False, elem_id="ps-main"):
            with gr.Column(scale=5, min_width=420, elem_id="ps-controls"):
                effective = prompt.build_prompt_box(controls, recipe)
                generate, stop = _buttons(engine)
                with gr.Tabs(elem_id="ps-tabs", overflow_behavior="wrap"):
                    with gr.Tab(redux.TITLE, id="redux", elem_id="ps-tab-redux"):
                        references = redux.build_redux_tab(controls, recipe)
                    with gr.Tab(prompt.TITLE, id="prompt", elem_id="ps-tab-prompt"):
                        source = prompt.build_prompt_tab(controls, recipe, engine, effective)
                        likeness = identity.build_identity_accordion(
                            controls, recipe, engine.list_controlnets()
                        )
                        characters = regions.build_regions_accordion(
                            controls, recipe, loras.list_loras(engine)
                        )
                    with gr.Tab(settings.TITLE, id="settings", elem_id="ps-tab-settings"):
                        tab = settings.build_settings_tab(controls, recipe, presets)
                        _model_files(models)
                    with gr.Tab(latent.TITLE, id="latent", elem_id="ps-tab-latent"):
                        latent.build_latent_tab(controls, recipe)
                    with gr.Tab(expression.TITLE, id="expression", elem_id="ps-tab-expression"):
                        faces = expression.build_expression_tab(
                            controls, recipe, [(p.label, p.note) for p in expressions],
                            engine.expression_status(),
                        )  # fmt: skip
                    with gr.Tab(refine.TITLE, id="refine", elem_id="ps-tab-refine"):
                        details = refine.build_refine_tab(
                            controls, recipe, engine.list_detectors(), engine.refine_status()
                        )
                    with gr.Tab(upscale.TITLE, id="upscale", elem_id="ps-tab-upscale"):
                        enlarge = upscale.build_upscale_tab(
                            controls, recipe, upscale.list_upscalers(engine),
                            loras.list_loras(engine), upscale.upscale_status(engine),
                        )  # fmt: skip
                    with gr.Tab(color.TITLE, id="color", elem_id="ps-tab-color"):
                        upload = color.build_color_tab(controls, recipe, engine.list_luts())
            with gr.Column(scale=6, min_width=420, elem_id="ps-results"):
                panel = results.build_results()
                _engine_queue(engine)
        callbacks = StudioCallbacks(
            engine,
            controls,
            panel,
            state,
            upload,
            seed_mode=tab.seed_mode,
            source=source,
            redux=references,
            generate_button=generate,
        )
        faces_callbacks = ExpressionCallbacks(callbacks, faces, expressions)
        details_callbacks = RefineCallbacks(callbacks, details)
        enlarge_callbacks = UpscaleCallbacks(callbacks, enlarge)
        likeness_callbacks = IdentityCallbacks(callbacks, likeness)
        characters_callbacks = RegionsCallbacks(callbacks, characters)
        rendered = _wire_render(callbacks, generate, stop)
        demo.unload(callbacks.disconnected)  # a closed tab stops its render
        _wire_color(callbacks)
        _wire_results(callbacks)
        ResultsCallbacks(callbacks).wire(demo)
        _wire_source(callbacks)
        faces_callbacks.wire(after_render=rendered)
        details_callbacks.wire(after_render=rendered)
        enlarge_callbacks.wire(after_render=rendered)
        likeness_callbacks.wire()
        characters_callbacks.wire(after_render=rendered)
        if callbacks.redux is not None:
            callbacks.redux.wire()
        if callbacks.loras is not None:
            callbacks.loras.wire()
        settings.SettingsCallbacks(
            controls, tab, state, presets, golden, lora_files=engine.list_loras
        ).wire(demo)
        _api(callbacks)
    demo.queue(max_size=64)
    return demo


def _model_files(models: str) -> None:
    """What the engine found: every file, its layout, dtype, variant, block counts and any
    shape warning (`engine models` prints the same)."""
    with gr.Accordion("Model files", open=False, elem_id="ps-model-files"):
        gr.Markdown(models)


def render_slots(engine: Any) -> int:
    """Renders that may run at once: one per engine (an EnginePool has several)."""
    return getattr(engine, "size", 1)


def _engine_queue(engine: Any) -> None:
    """With several engines, which device renders what, refreshed every two seconds."""
    if render_slots(engine) < 2:
        return
    lines = gr.Markdown(" · ".join(engine.queue_lines()), elem_id="ps-engines")
    gr.Timer(2.0).tick(
        lambda: " · ".join(engine.queue_lines()), outputs=lines, api_visibility="private",
        show_progress="hidden", concurrency_limit=None,
    )  # fmt: skip


def _banner(engine: Any, models: str) -> None:
    gr.Markdown("# Portrait Studio", elem_id="ps-title")
    lines = []
    if label := engine.demo_label():
        lines.append(f"**{label}**")
    if not engine.has_diffusion():
        lines.append(
            "Generate is off until the Flux files are complete (what is missing is below). "
            "The Expression and Color tabs still edit and grade uploaded images.\n\n" + models
        )
    gr.Markdown("\n\n".join(lines), visible=bool(lines), elem_id="ps-banner")


def _buttons(engine: Any) -> tuple[gr.Button, gr.Button]:
    with gr.Row():
        generate = gr.Button(
            "Generate",
            variant="primary",
            interactive=engine.has_diffusion(),
            elem_id="ps-generate",
            scale=3,
        )
        stop = gr.Button("Stop", variant="stop", elem_id="ps-stop", scale=1)
    return generate, stop


def _wire_render(cb: StudioCallbacks, generate: gr.Button, stop: gr.Button) -> Any:
    """Generate and Stop; returns Generate's event (others chain onto it)."""
    # trigger_mode "once": clicks while a render is pending are dropped, never queued twice.
    gen_event = generate.click(
        cb.generate,
        inputs={cb.state, cb.seed_mode, *cb.controls.components()},
        outputs=cb.run_outputs(),
        concurrency_limit=render_slots(cb.engine),
        concurrency_id=GPU,
        trigger_mode="once",
        api_visibility="private",
        show_progress="minimal",
        show_progress_on=[cb.panel.progress],  # the queue position shows on the bar
    )
    stop.click(
        cb.stop,
        inputs=[cb.state],
        outputs=[cb.panel.status, cb.panel.progress, generate],
        cancels=[gen_event],
        concurrency_limit=None,
        api_visibility="private",
    )
    return gen_event


def _wire_color(cb: StudioCallbacks) -> None:
    """Every Color control re-grades whichever way the person changes it: a drag, arrow keys
    or a typed number (input), a slider's release, Enter in a number box. (Not `change`:
    restoring a recipe must not re-grade, and rewrite, the result on screen.)

    One event per control, sending only that control's value: the page's cost per event
    grows with its inputs, and the session already holds the rest of the grade.
    """
    for component in cb.controls.components(color.PREFIX):
        triggers = [component.input]
        if isinstance(component, gr.Slider):
            triggers.append(component.release)
        elif isinstance(component, gr.Number):
            triggers.append(component.submit)
        gr.on(
            triggers,
            cb.regrade,
            inputs={cb.state, component},
            outputs=results.regrade_outputs(cb.panel),
            concurrency_limit=1,
            concurrency_id=COLOR,
            trigger_mode="always_last",
            api_visibility="private",
            show_progress="hidden",
        )
    cb.upload.upload(
        cb.grade_upload,
        inputs={cb.state, cb.upload, *cb.controls.components(color.PREFIX)},
        outputs=results.run_outputs(cb.panel),
        concurrency_limit=1,
        concurrency_id=COLOR,
        api_visibility="private",
    )


def _wire_source(cb: StudioCallbacks) -> None:
    """The img2img start image: checked and stored on upload, forgotten on clear."""
    assert cb.source is not None
    switch, preview = cb.controls["source.kind"], cb.source.source_preview
    cb.source.source_upload.upload(
        cb.upload_source,
        inputs=[cb.state, cb.source.source_upload, cb.controls["settings.denoise"]],
        outputs=[cb.panel.status, cb.panel.error, switch, preview],
        concurrency_limit=None,
        api_visibility="private",
    )
    cb.source.source_upload.clear(
        cb.clear_source,
        inputs=[cb.state],
        outputs=[cb.panel.status, switch, preview],
        concurrency_limit=None,
        api_visibility="private",
    )


def _wire_results(cb: StudioCallbacks) -> None:
    panel = cb.panel
    panel.restore.upload(
        cb.restore,
        inputs=[cb.state, panel.restore],
        outputs=[*cb.controls.components(), panel.status, *cb.restore_outputs()],
        concurrency_limit=None,
        api_visibility="private",
    )


def _api(cb: StudioCallbacks) -> None:
    """Endpoints for programs (gradio_client); the components never show on the page."""
    api = ApiCallbacks(cb.engine)
    with gr.Column(visible=False):
        recipe_json = gr.Textbox(label="recipe_json")
        images = gr.File(label="images", file_count="multiple")
        report = gr.JSON(label="report")
        image = gr.File(label="image")
        digest = gr.Textbox(label="digest")
        render = gr.Button("render")
        store = gr.Button("upload_image")
    render.click(
        api.render_api,
        inputs=[recipe_json],
        outputs=[images, report],
        api_name="render",
        api_description=(
            "Render a recipe JSON (a partial recipe is laid over the default one). Returns "
            "the PNG files, each carrying its recipe, and the run report."
        ),
        concurrency_limit=render_slots(api.engine),
        concurrency_id=GPU,
    )
    store.click(
        api.upload_api,
        inputs=[image],
        outputs=[digest],
        api_name="upload_image",
        api_description=(
            "Validate and store an image; returns its digest for source.image or Redux."
        ),
        concurrency_limit=None,
    )
