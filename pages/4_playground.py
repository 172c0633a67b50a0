"""Playground: try a trained model on a new picture."""

from __future__ import annotations

import io
import os

import streamlit as st
from PIL import Image, ImageOps

from core.evaluation import load_run_model, predict_images
from pages import common

st.title(":material/science: Playground")
common.intro(
    "<b>Step 4 of 4.</b> Pick a trained model, then give it a picture it has never seen (upload one, or "
    "take one with your camera) and see which class it thinks it is, and how sure it is."
)


@st.cache_resource(show_spinner=False, max_entries=3)
def _load(run_dir: str, mtime: float):
    return load_run_model(run_dir, device="cpu")


def main() -> None:
    """Pick a run, give it a picture, show the top classes."""
    runs = [r for r in common.store().list() if r.best_checkpoint.exists()]
    if not runs:
        st.info(
            "There is no trained model yet. Train one on the **Train** page first.", icon=":material/fitness_center:"
        )
        st.page_link(common.PAGE_TRAIN, label="Go to Train", icon=":material/fitness_center:")
        return

    names = [r.name for r in runs]
    wanted = st.query_params.get("run")
    if wanted in names and st.session_state.get("_playground_query") != wanted:
        st.session_state["play_run"] = wanted
        st.session_state["_playground_query"] = wanted
    if st.session_state.get("play_run") not in names:
        st.session_state["play_run"] = names[0]
    by_name = {r.name: r for r in runs}
    st.selectbox(
        "Trained model",
        names,
        key="play_run",
        format_func=lambda n: common.run_label(by_name[n]),
        help="Every run that has saved a model, newest first.",
    )
    run = by_name[st.session_state["play_run"]]
    classes = run.classes
    st.caption(
        f"This model knows {len(classes)} classes: " + ", ".join(classes[:20]) + (" …" if len(classes) > 20 else "")
    )

    tab_upload, tab_camera = st.tabs([":material/upload: Upload a picture", ":material/photo_camera: Take a photo"])
    with tab_upload:
        uploaded = st.file_uploader(
            "A picture",
            type=sorted(e.lstrip(".") for e in common.IMAGE_EXTENSIONS),
            key="play_upload",
            help="Any photo; it does not need to be from your folder.",
        )
    with tab_camera:
        st.caption("Your browser asks before it uses the camera.")
        photo = st.camera_input(
            "Take a photo", key="play_camera", help="Hold the object in front of the camera and click."
        )

    source = photo or uploaded
    if source is None:
        st.info("Upload a picture or take a photo to see what the model says.", icon=":material/arrow_upward:")
        return

    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(source.getvalue())))
        image = image.convert("RGB")
    except Exception:  # noqa: BLE001
        st.error("That file could not be opened as a picture. Try a JPEG or PNG photo.", icon=":material/error:")
        return

    try:
        with st.spinner("Loading the model…"):
            loaded = _load(str(run.path), os.path.getmtime(run.best_checkpoint))
        k = min(5, len(loaded.classes))
        result = predict_images(loaded, [image], k=k)[0]
    except Exception as exc:  # noqa: BLE001
        st.error(f"The model could not make a prediction: {common.friendly(exc)}", icon=":material/error:")
        return

    if result.get("error"):
        st.error(f"The picture could not be read: {result['error']}", icon=":material/error:")
        return

    top_class, top_prob = result["top"][0]
    c1, c2 = st.columns([1, 2], gap="large")
    with c1:
        st.image(image, caption=getattr(source, "name", "your picture"), width=320)
    with c2:
        st.markdown(f"### It looks like: **{top_class}**")
        sure = "very sure" if top_prob >= 0.9 else "fairly sure" if top_prob >= 0.6 else "unsure"
        st.markdown(f"The model is **{top_prob:.0%}** sure ({sure}).")
        st.plotly_chart(common.top_classes_figure(result["top"]), key="top_classes")
        st.caption("The model always picks one of the classes it was taught, even for a picture of something else.")


main()
