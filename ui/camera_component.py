"""The camera in the browser: a live picture and a burst of frames in one gesture.

`st.camera_input` takes one photo per click; a class needs 20 to 50. This is a
small custom component (Streamlit's public `st.components.v2` API, whose
JavaScript runs in the page) that asks the browser for the camera
(getUserMedia), and while "Hold to record" is held (or after one click on
"Take N pictures") grabs a few frames a second, shrinks each to at most
`max_side` pixels as a JPEG in the browser, and hands the whole burst to
Python in one trigger value: {"id", "target", "frames": [base64 JPEG, …]}.
Whether the camera works is its state value "camera": {"status": "on"} or
{"status": "error", "error": the browser's error name, "message": …}, so the
page can say in plain words why not, and offer uploads instead.
"""

from __future__ import annotations

import base64
import binascii

import streamlit as st

# One burst may hold at most this many frames; the browser sends fewer.
MAX_FRAMES = 100

_CSS = """
.ts-cam { font-family: var(--st-font, sans-serif); color: var(--st-text-color, #222); }
.ts-cam video { width: 100%; max-width: 480px; aspect-ratio: 4 / 3; background: #222; border-radius: 8px;
  transform: scaleX(-1); display: block; border: 3px solid transparent; object-fit: cover; }
.ts-cam.recording video { border-color: #e53935; }
.ts-cam.failed video { display: none; }
.ts-cam .row { display: flex; gap: 0.5rem; align-items: center; flex-wrap: wrap; margin-top: 0.5rem; }
.ts-cam button { font: inherit; padding: 0.45rem 0.9rem; border-radius: 8px; cursor: pointer;
  border: 1px solid var(--st-border-color, #ccc); background: var(--st-secondary-background-color, #f0f2f6);
  color: inherit; user-select: none; touch-action: none; }
.ts-cam button.hold { background: var(--st-primary-color, #ff4b4b); color: #fff; border-color: transparent; }
.ts-cam button:disabled { opacity: 0.5; cursor: default; }
.ts-cam .status { font-size: 0.95rem; }
.ts-cam .problem { color: #b71c1c; }
"""

_JS = """
function capture(cam) {
  const v = cam.video, side = cam.cfg.max_side || 640;
  if (!v.videoWidth || !v.videoHeight) return null;
  const scale = Math.min(1, side / Math.max(v.videoWidth, v.videoHeight));
  const c = cam.canvas;
  c.width = Math.round(v.videoWidth * scale);
  c.height = Math.round(v.videoHeight * scale);
  c.getContext("2d").drawImage(v, 0, 0, c.width, c.height);
  return c.toDataURL("image/jpeg", cam.cfg.quality || 0.85).split(",")[1];
}

function say(cam, text, problem) {
  cam.status.textContent = text;
  cam.status.className = problem ? "status problem" : "status";
}

function enable(cam) {
  const ready = !!cam.stream && !!cam.cfg.target && !cam.recording;
  cam.hold.disabled = !ready;
  cam.burst.disabled = !ready;
  cam.retry.style.display = cam.failed && !cam.stream && !cam.starting ? "" : "none";
  cam.root.classList.toggle("failed", !!cam.failed && !cam.stream);
  cam.burst.textContent = "Take " + (cam.cfg.burst || 20) + " pictures";
}

function begin(cam, limit) {
  if (cam.recording || !cam.stream || !cam.cfg.target) return;
  cam.recording = { frames: [], target: cam.cfg.target, limit: limit };
  cam.root.classList.add("recording");
  enable(cam);
  const grab = () => {
    const r = cam.recording;
    if (!r) return;
    const frame = capture(cam);
    if (frame) r.frames.push(frame);
    say(cam, "Recording into '" + r.target + "'… " + r.frames.length + " pictures");
    if (r.frames.length >= r.limit) finish(cam);
  };
  grab();
  cam.timer = setInterval(grab, 1000 / (cam.cfg.fps || 5));
}

function finish(cam) {
  const r = cam.recording;
  if (!r) return;
  clearInterval(cam.timer);
  cam.recording = null;
  cam.root.classList.remove("recording");
  enable(cam);
  if (!r.frames.length) { say(cam, "Hold the button a little longer: no picture was taken yet."); return; }
  const id = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
  cam.pending = id;
  say(cam, "Saving " + r.frames.length + " pictures into '" + r.target + "'…");
  cam.send("frames", { id: id, target: r.target, frames: r.frames });
}

async function start(cam) {
  if (cam.stream || cam.starting) return;
  const media = navigator.mediaDevices;
  if (!window.isSecureContext || !media || !media.getUserMedia) {
    say(cam, "This browser gives no camera to this page.", true);
    cam.failed = true;
    cam.report("camera", { status: "error", error: "insecure", message: "no navigator.mediaDevices" });
    enable(cam);
    return;
  }
  cam.starting = true;
  say(cam, "Starting the camera… (allow it if the browser asks)");
  try {
    const stream = await media.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    if (cam.stopped) { stream.getTracks().forEach((t) => t.stop()); return; }
    cam.stream = stream;
    cam.failed = false;
    cam.video.srcObject = stream;
    stream.getVideoTracks().forEach((t) => t.addEventListener("ended", () => {
      cam.stream = null;
      cam.failed = true;
      say(cam, "The camera stopped.", true);
      cam.report("camera", { status: "error", error: "ended", message: "the camera stopped" });
      enable(cam);
    }));
    await cam.video.play().catch(() => {});
    say(cam, "Camera on. Hold the red button (or press Take) to record.");
    cam.report("camera", { status: "on" });
  } catch (err) {
    cam.failed = true;
    say(cam, "The camera could not be started.", true);
    cam.report("camera", { status: "error", error: (err && err.name) || "Error", message: String((err && err.message) || err) });
  } finally {
    cam.starting = false;
    enable(cam);
  }
}

function stop(cam) {
  cam.stopped = true;
  clearInterval(cam.timer);
  if (cam.stream) cam.stream.getTracks().forEach((t) => t.stop());
  cam.stream = null;
}

function build(parent) {
  const root = document.createElement("div");
  root.className = "ts-cam";
  root.innerHTML =
    '<video autoplay muted playsinline aria-label="What the camera sees"></video>' +
    '<div class="row"><button class="hold" type="button">Hold to record</button>' +
    '<button class="burst" type="button">Take 20 pictures</button>' +
    '<button class="retry" type="button" style="display:none">Try the camera again</button>' +
    '<span class="status" role="status"></span></div>';
  parent.appendChild(root);
  const cam = {
    root: root, video: root.querySelector("video"), canvas: document.createElement("canvas"),
    hold: root.querySelector(".hold"), burst: root.querySelector(".burst"), retry: root.querySelector(".retry"),
    status: root.querySelector(".status"), cfg: {}, recording: null, stream: null,
  };
  const down = (e) => { e.preventDefault(); begin(cam, cam.cfg.max_frames || 60); };
  const up = () => { if (cam.recording && cam.recording.limit === (cam.cfg.max_frames || 60)) finish(cam); };
  cam.hold.addEventListener("pointerdown", down);
  cam.hold.addEventListener("contextmenu", (e) => e.preventDefault());  // a long touch is a hold, not a menu
  ["pointerup", "pointerleave", "pointercancel"].forEach((n) => cam.hold.addEventListener(n, up));
  cam.hold.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) down(e); });
  cam.hold.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") up(); });
  cam.burst.addEventListener("click", () => begin(cam, cam.cfg.burst || 20));
  cam.retry.addEventListener("click", () => start(cam));
  return cam;
}

export default function (component) {
  const { data, parentElement, setTriggerValue, setStateValue } = component;
  let cam = parentElement.__tsCamera;
  const fresh = !cam || cam.stopped;
  if (fresh) {
    if (cam) cam.root.remove();
    cam = build(parentElement);
    parentElement.__tsCamera = cam;
  }
  cam.send = setTriggerValue;
  cam.report = setStateValue;
  cam.cfg = data || {};
  if (cam.pending && cam.cfg.saved === cam.pending) {
    cam.pending = null;
    say(cam, "Saved. '" + cam.cfg.target + "' has " + cam.cfg.count + " pictures.");
  } else if (cam.stream && !cam.recording && !cam.pending) {
    say(cam, "Camera on: recording into '" + cam.cfg.target + "'.");
  }
  enable(cam);
  if (fresh) start(cam);  // later only from "Try the camera again", so a refusal is asked once
  // Called when Streamlit takes the component away (another page or tab):
  // the camera goes off then, and only then.
  return () => setTimeout(() => { if (!parentElement.isConnected) stop(cam); }, 0);
}
"""

_COMPONENT = st.components.v2.component("transfer_studio.camera_burst", js=_JS, css=_CSS)


def camera_burst(key: str, target: str, count: int, saved: str | None, burst: int = 20, fps: int = 5):
    """Draw the camera; returns (burst or None, camera state or None). A burst
    is {"id", "target", "frames": [JPEG bytes, …]}; `saved` is the id of the
    last burst Python saved (the component then says so)."""
    result = _COMPONENT(
        key=key,
        data={
            "target": target,
            "count": count,
            "saved": saved,
            "burst": burst,
            "fps": fps,
            "max_side": 640,
            "quality": 0.85,
            "max_frames": 60,
        },
        on_frames_change=lambda: None,
        on_camera_change=lambda: None,
    )
    return _decoded(result.get("frames")), result.get("camera")


def _decoded(payload) -> dict | None:
    """The burst with its frames as bytes (at most MAX_FRAMES; anything that
    is not base64 is dropped here, anything not a picture later)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("frames"), list):
        return None
    frames = []
    for text in payload["frames"][:MAX_FRAMES]:
        if isinstance(text, str):
            try:
                frames.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                continue
    return {"id": str(payload.get("id") or ""), "target": str(payload.get("target") or ""), "frames": frames}
