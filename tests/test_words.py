"""Words for non-programmers: strategies named by what they do, block names
as people read them, counts that agree with the picture of the network,
paths pasted the way people paste them, phones' HEIC pictures, class names
in the order people expect, and the Playground's honesty about its classes.

Real photos (assets/examples/clothes), the real scan, the real command line, and the
app's pages through Streamlit's AppTest with a real EfficientNet-Lite0 run.
"""

from __future__ import annotations

import re
import shutil
import types
from pathlib import Path
from urllib.parse import quote

import pytest
from streamlit.testing.v1 import AppTest

from core import cli
from core.config import STRATEGY_WORDS, strategy_words
from core.freeze import STRATEGIES, make_freeze_plan
from core.images import HEIC_HINT
from core.paths import pasted_path
from core.resume import kept_split
from core.runs import Run, RunStore
from core.scan import scan_folder
from tests.folders import PACKAGED_BACKBONE, PHOTOS
from ui import uploads, words

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
# Names that only the code uses: none may appear in a sentence a person reads.
RAW_BLOCK_NAME = re.compile(r"\b(final_conv|stage\d|features\.\d+|pre_logits|patch_embed)\b")
# The blocks of MobileNetV2 and EfficientNet-Lite (a parameter-free "pool" before the head).
MOBILE_BLOCKS = {
    "stem": 1824,
    "stage1": 13968,
    "stage2": 39696,
    "stage3": 487040,
    "stage4": 1269184,
    "final_conv": 412160,
    "pool": 0,
    "head": 3843,
}


def _photos(dst: Path, classes: dict[str, str], per_class: int = 3) -> Path:
    """A folder of real photos: class folder name -> the photo class it copies."""
    for name, source in classes.items():
        (dst / name).mkdir(parents=True)
        for photo in sorted((PHOTOS / "train" / source).glob("*.jpg"))[:per_class]:
            shutil.copy(photo, dst / name / photo.name)
    return dst


# --- strategies ----------------------------------------------------------------------------


def test_every_strategy_is_named_by_what_it_does_with_its_technical_name_second():
    assert set(STRATEGY_WORDS) == set(STRATEGIES) | {"custom"}
    for key, (plain, technical, help_text) in STRATEGY_WORDS.items():
        assert plain and technical and help_text and plain != technical, key
        assert plain[0].isupper() and technical[0].islower(), key  # a name, then a term
    assert strategy_words("linear") == ("Only the new last layer learns", "linear probe")
    assert strategy_words("last-2") == ("The last 2 blocks learn too", "last-2 fine-tune")
    assert strategy_words("last-1") == ("The last block learns too", "last-1 fine-tune")
    assert strategy_words("gradual")[0] == "Unfreeze one block at a time"
    assert strategy_words("discriminative")[0] == "Everything learns, earlier blocks more slowly"

    # The Model page's presets, the tables and markdown all read the same words.
    assert words.PRESETS["linear"] == "Only the new last layer learns"
    assert words.PRESET_TECHNICAL["full"] == "full fine-tune"
    assert words.PRESETS["last"] == STRATEGY_WORDS["last-N"][0]
    assert words.strategy_label("full") == "Everything learns (full fine-tune)"
    assert words.strategy_lines("gradual") == "Unfreeze one block at a time  \n:gray[gradual unfreezing]"
    assert words.strategy_md("linear") == "**Only the new last layer learns** (linear probe)"


def test_the_plan_sentence_names_blocks_as_people_read_them():
    plan = make_freeze_plan(MOBILE_BLOCKS, "last-2")
    sentence = plan.describe()
    assert "(Stage 4, Final layer) are trained" in sentence
    assert not RAW_BLOCK_NAME.search(sentence), sentence


def test_a_plan_sentence_saved_by_an_older_run_reads_with_block_titles():
    old = "The new head and 2 pretrained blocks (stage4, final_conv) are trained; the other 4 stay frozen."
    assert words.plan_sentence(old) == (
        "The new head and 2 pretrained blocks (Stage 4, Final layer) are trained; the other 4 stay frozen."
    )
    new = make_freeze_plan(MOBILE_BLOCKS, "last-2").describe()
    assert words.plan_sentence(new) == new


def test_frozen_counts_leave_out_the_block_without_weights():
    """The picture shows "pool" as "no weights"; the fast-path note once counted
    it as a 7th frozen block. One function gives both numbers."""
    linear = make_freeze_plan(MOBILE_BLOCKS, "linear")
    assert linear.frozen_prefix() == 7  # what is stored: every block before the head
    assert linear.frozen_blocks() == ["stem", "stage1", "stage2", "stage3", "stage4", "final_conv"]
    assert "the 6 pretrained blocks stay frozen" in linear.describe()
    last2 = make_freeze_plan(MOBILE_BLOCKS, "last-2")
    assert len(last2.frozen_blocks()) == 4 and "the other 4 stay frozen" in last2.describe()
    assert last2.frozen_blocks(upto=last2.frozen_prefix()) == ["stem", "stage1", "stage2", "stage3"]


# --- paths ---------------------------------------------------------------------------------


def test_pasted_paths_become_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "My Photos" / "école 2"
    folder.mkdir(parents=True)
    plain = str(folder)
    url = "file://" + quote(plain)
    monkeypatch.setenv("HOME", str(tmp_path))
    for pasted in (
        plain,
        f"'{plain}'",
        f'"{plain}"',
        f"  “{plain}”\n",
        url,
        f'"{url}"',
        "file://localhost" + quote(plain),
        "~/My Photos/école 2",
        plain.replace(" ", "\\ "),  # dropped into a terminal
    ):
        assert pasted_path(pasted) == plain, pasted
    assert pasted_path("") == ""
    assert pasted_path("relative/folder") == "relative/folder"


def test_the_scan_and_the_command_line_take_pasted_paths(tmp_path, monkeypatch, capsys):
    data = _photos(tmp_path / "my pictures", {"hat": "hat", "shoes": "shoes"})
    monkeypatch.setenv("HOME", str(tmp_path))
    for pasted in (f"'{data}'", "file://" + quote(str(data)), "~/my pictures"):
        assert scan_folder(pasted).classes == ["hat", "shoes"], pasted
    assert cli.main(["scan", f'"{data}"', "--json"]) == 0
    assert '"hat"' in capsys.readouterr().out


# --- class order ---------------------------------------------------------------------------


def test_class_names_sort_as_people_read_them(tmp_path):
    photo_of = {"10": "hat", "2": "pants", "1": "shoes", "banana": "t-shirt", "Apple": "hat", "class 9": "pants"}
    report = scan_folder(_photos(tmp_path / "data", {**photo_of, "class 10": "shoes"}))
    assert report.classes == ["1", "2", "10", "Apple", "banana", "class 9", "class 10"]
    # Labels follow that order.
    assert {report.classes[label] for p, label in report.train if "/10/" in p} == {"10"}


def test_a_run_keeps_the_class_order_it_was_trained_with(tmp_path):
    """A run saved before the natural order stores ["10", "2"]; resuming it
    keeps its own order and labels, whatever a fresh scan says now."""
    data = _photos(tmp_path / "data", {"10": "hat", "2": "shoes"}, per_class=4)
    now = scan_folder(data)
    assert now.classes == ["2", "10"]
    old = now.to_dict()
    old["classes"] = ["10", "2"]
    swap = {0: 1, 1: 0}
    for split in ("train", "val"):
        old[split] = [[p, swap[label]] for p, label in old[split]]
    old["counts"] = {"10": now.counts["10"], "2": now.counts["2"]}
    kept, _note = kept_split(types.SimpleNamespace(scan=old), now)
    assert kept.classes == ["10", "2"]
    assert all(kept.classes[label] == Path(p).parent.name for p, label in kept.train + kept.val)


# --- HEIC ----------------------------------------------------------------------------------


def _heic_bytes() -> bytes:
    """The start of an iPhone photo: an ISO box "ftyp" of brand "heic"."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def test_heic_pictures_get_a_hint_to_export_them_as_jpeg(tmp_path):
    data = _photos(tmp_path / "data", {"hat": "hat", "shoes": "shoes"})
    (data / "hat" / "IMG_0001.HEIC").write_bytes(_heic_bytes())
    (data / "shoes" / "renamed-on-the-phone.jpg").write_bytes(_heic_bytes())
    report = scan_folder(data)
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert reasons["IMG_0001.HEIC"] == HEIC_HINT
    assert reasons["renamed-on-the-phone.jpg"] == HEIC_HINT
    assert "export it as JPEG" in HEIC_HINT and "not a" not in HEIC_HINT
    assert "export it as JPEG" in report.format_text()

    # Uploading only HEIC pictures says the same, and saves nothing.
    upload = types.SimpleNamespace(name="IMG_0002.heic", getvalue=_heic_bytes)
    with pytest.raises(Exception, match="export it as JPEG"):
        uploads.save_pictures([upload], tmp_path / "uploads", "phone", "hat")


# --- the pages -----------------------------------------------------------------------------


@pytest.fixture(autouse=False)
def through_app_py(monkeypatch):
    """As in test_app_pages: every rerun executes app.py's st.navigation."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "success") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def _frozen_tiles(at: AppTest) -> int:
    """How many blocks the Model page's picture shows as frozen."""
    return sum("ac_unit</span> frozen" in m.value for m in at.markdown if "border-radius:10px" in m.value)


def _page(at: AppTest, page: str) -> AppTest:
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_pages_name_strategies_blocks_and_f1_in_plain_words(env, with_run, small_data, through_app_py):
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    _page(at, "pages/1_data.py")
    at.text_input(key="data_dir_input").set_value(f"'{small_data}'").run()  # pasted with quotes
    assert at.session_state["data_dir"] == str(small_data)
    assert "needs fixing" not in _texts(at)

    # Model: the strategies by what they do, technical names as captions; the
    # picture, the sentence and (later) the fast-path note count 6 frozen blocks.
    _page(at, "pages/2_model.py")
    at.selectbox(key="backbone").set_value("efficientnet_lite0").run()
    at.radio(key="preset").set_value("linear").run()
    radio = at.radio(key="preset")
    assert radio.options[0] == "Only the new last layer learns"
    assert list(radio.proto.captions) == list(words.PRESET_TECHNICAL.values())
    assert _frozen_tiles(at) == 6  # the fast-path note on Results says 6 too
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "Only the new last layer learns  \n:gray[linear probe]" in sidebar
    at.radio(key="preset").set_value("last").run()
    at.slider(key="last_n").set_value(2).run()
    texts = _texts(at)  # (with the fine-tuning defaults the sentence also says the earlier block learns more gently)
    assert "(Stage 4, Final layer) are trained" in texts and "the other 4 stay frozen" in texts, texts
    assert _frozen_tiles(at) == 4
    tiles = [m.value for m in at.markdown if "border-radius:10px" in m.value]
    rates = [t for t in tiles if "rate ×" in t]  # the learning blocks' gentler rates: none on a frozen block
    assert len(rates) == 2 and not any("ac_unit</span> frozen" in t for t in rates), rates
    assert not RAW_BLOCK_NAME.search(_texts(at)), RAW_BLOCK_NAME.search(_texts(at))

    # Runs, Results and Compare name the run's strategy the same way; F1 is explained.
    _page(at, "pages/5_runs.py")
    assert list(at.dataframe[0].value["What learned"]) == ["Only the new last layer learns (linear probe)"]
    assert "**What learned:** **Only the new last layer learns** (linear probe). Only the new head" in _texts(at)
    _page(at, "pages/6_results.py")
    results = _texts(at)
    assert "How it learned: **Only the new last layer learns** (linear probe)" in results
    assert "the 6 frozen blocks ran once" in results  # the same count as the picture
    assert words.F1_LINE in results and "Balanced score (macro F1): " in results  # named as Compare names it
    layers = at.selectbox(key=f"closer_layer_{with_run.name}").options  # Grad-CAM's layer, as people read it
    assert layers[-1] == "Final layer" and not RAW_BLOCK_NAME.search(" ".join(layers)), layers
    _page(at, "pages/7_compare.py")
    assert words.F1_LINE in _texts(at)
    assert not RAW_BLOCK_NAME.search(_texts(at))


def test_playground_says_it_always_picks_one_of_its_classes_beside_the_answer(
    env, with_run, small_data, through_app_py
):
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    _page(at, "pages/4_playground.py")
    hand = sorted((small_data / "val" / "hat").glob("*.jpg"))[0]
    at.file_uploader(key="play_upload").upload(hand.name, hand.read_bytes(), "image/jpeg").run()
    assert not at.exception, [e.value for e in at.exception]
    warning = "\n".join(w.value for w in at.warning)
    assert "always picks one of its 4 classes" in warning
    assert "**hat**, **pants**, **shoes** or **t-shirt**" in warning
    assert not any("always picks" in c.value for c in at.caption)  # not small grey text


def test_runs_are_named_by_what_tells_them_apart_first_and_told_apart_when_alike(tmp_path):
    """A person picks a run by what it was, then its pictures and when it
    started, not by its folder's name. What tells runs apart comes first, as
    in the Compare legends: the start time first filled the part of a chip
    a 1024 px window shows. Two runs that read alike (a sweep starts several
    in one minute) say when they started to the second, then their folder's
    name, so the list, and the select widget that keys on the text, still
    tell them apart."""
    import time

    from core.config import TrainConfig
    from core.runs import RunStore, prepare_run

    store, pictures = RunStore(tmp_path / "runs"), tmp_path / "holiday photos"
    pictures.mkdir()
    made = []
    for backbone in ("mobilenet_v2", "mobilenet_v2", "resnet18"):
        run, lock = prepare_run(TrainConfig(data_dir=str(pictures), backbone=backbone), store)
        lock.release()
        run.update_status(created=time.mktime((2021, 12, 1, 9, 30, 0, 0, 0, -1)), best_val_accuracy=0.875)
        made.append(run)
    labels = words.run_labels(store.list())
    alike, other = labels[made[0].name], labels[made[2].name]
    assert other == "ResNet-18 · linear probe · holiday photos · 87.5% · 01 Dec 2021 09:30"
    assert alike == f"MobileNetV2 · linear probe · holiday photos · 87.5% · 01 Dec 2021 09:30:00 · {made[0].name}"
    assert len(set(labels.values())) == 3
    assert words.run_labels(store.list(), with_accuracy=False)[made[2].name].endswith(
        "· holiday photos · 01 Dec 2021 09:30"
    )
    # Alike but for the second they started: that second tells them apart, not their folders' names.
    made[1].update_status(created=time.mktime((2021, 12, 1, 9, 30, 12, 0, 0, -1)))
    labels = words.run_labels(store.list())
    assert labels[made[1].name] == "MobileNetV2 · linear probe · holiday photos · 87.5% · 01 Dec 2021 09:30:12", labels
    assert labels[made[0].name].endswith("· 01 Dec 2021 09:30:00") and labels[made[2].name].endswith(
        "· 01 Dec 2021 09:30"
    )
    made[1].update_status(created=time.mktime((2021, 12, 1, 9, 30, 0, 0, 0, -1)))
    # When, as a person placing a run among their own says it: today, yesterday, a day, a day of another year.
    now = time.mktime((2026, 12, 1, 9, 30, 0, 0, 0, -1))
    assert words.fmt_started(now - 60, now=now) == "today 09:29"
    assert words.fmt_started(now - 86_400, seconds=True, now=now) == "yesterday 09:30:00"
    assert words.fmt_started(now - 5 * 86_400, now=now) == "26 Nov 09:30"
    assert words.fmt_started(now - 365 * 86_400, now=now) == "01 Dec 2025 09:30"
    assert words.fmt_started(None) == words.fmt_started(1e300) == "–"

    # A chart's legend: short, told apart the same way.
    legends = words.run_legends(store.list())
    # Nothing but their folders differs (the same pictures, started in the same second): only that is added.
    assert legends[made[2].name] == "ResNet-18 · linear probe"
    assert legends[made[0].name] == f"MobileNetV2 · linear probe · {made[0].name}"
    assert len(set(legends.values())) == 3
    # When they started, only where that is what tells them apart: to the minute, or to the second.
    made[1].update_status(created=time.mktime((2021, 12, 1, 9, 30, 12, 0, 0, -1)))
    legends = words.run_legends(store.list())
    assert legends[made[0].name] == "MobileNetV2 · linear probe · started 09:30:00", legends
    assert legends[made[1].name] == "MobileNetV2 · linear probe · started 09:30:12", legends
    made[1].update_status(created=time.mktime((2021, 12, 1, 9, 41, 0, 0, 0, -1)))
    assert words.run_legends(store.list())[made[1].name] == "MobileNetV2 · linear probe · started 09:41"


def test_a_damaged_runs_label_says_damaged_not_an_accuracy_it_cannot_back(tmp_path):
    """A run whose files are damaged (here its eval.json is cut off, or its status.json says 750%) is
    named "damaged" where a whole run's label gives its accuracy, in every picker, even those that leave
    accuracies out."""
    import time

    from core.config import TrainConfig
    from core.runs import prepare_run

    store, pictures = RunStore(tmp_path / "runs"), tmp_path / "holiday photos"
    pictures.mkdir()
    made = []
    for accuracy in (0.875, 0.875, 7.5):
        run, lock = prepare_run(TrainConfig(data_dir=str(pictures), backbone="resnet18", epochs=1), store)
        lock.release()
        created = time.mktime((2021, 12, 1, 9, 30 + len(made), 0, 0, 0, -1))
        run.update_status(created=created, best_val_accuracy=accuracy, state="stopped", epochs_done=1)
        made.append(run)
    (made[1].path / "eval.json").write_text('{"accuracy": 0.8')
    labels = words.run_labels(store.list())
    assert made[0].state == "stopped" and labels[made[0].name].endswith(" · 87.5% · 01 Dec 2021 09:30"), labels
    assert made[1].state == made[2].state == "damaged"
    assert labels[made[1].name] == "ResNet-18 · linear probe · holiday photos · damaged · 01 Dec 2021 09:31"
    assert labels[made[2].name].endswith(" · damaged · 01 Dec 2021 09:32") and "%" not in labels[made[2].name]
    quiet = words.run_labels(store.list(), with_accuracy=False)
    assert quiet[made[1].name] == labels[made[1].name] and "%" not in quiet[made[0].name], quiet


def test_runs_of_one_network_and_strategy_say_the_settings_that_differ(
    trained_run, linear_probe_run, small_data, tmp_path, env, through_app_py
):
    """Three real trainings of one network learning the same way read alike
    but for when they started: each line says its own values of the settings
    that differ among them (epochs, learning rate); a run of the same network
    learning another way keeps its short line. The Runs and Compare tables'
    "What learned" say them too, in rows tall enough to show them whole."""
    settings = {"backbone": PACKAGED_BACKBONE, "device": "cpu", "seed": 0}
    trained = [
        linear_probe_run,  # 2 epochs at the default rate, 0.001
        trained_run(small_data, strategy="linear", epochs=1, **settings),
        trained_run(small_data, strategy="linear", epochs=2, lr=0.01, **settings),
        trained_run(small_data, strategy="last-1", augment="none", epochs=1, **settings),
    ]
    for run in trained:
        shutil.copytree(run, tmp_path / "runs" / run.name)
    runs = RunStore(tmp_path / "runs").list()
    first, fewer, faster, other = (trained[i].name for i in range(4))
    labels = words.run_labels(runs)
    by_name = {r.name: r for r in runs}

    def accuracy(name: str) -> str:
        return words.fmt_pct(by_name[name].status["best_val_accuracy"])

    def started(name: str) -> str:
        return words.fmt_started(by_name[name].status["created"])

    lead = "EfficientNet-Lite0 · linear probe"
    assert labels[first] == f"{lead} · 2 epochs, learning rate: 0.001 · clothes · {accuracy(first)} · {started(first)}"
    assert labels[fewer] == f"{lead} · 1 epoch, learning rate: 0.001 · clothes · {accuracy(fewer)} · {started(fewer)}"
    assert labels[faster].startswith(f"{lead} · 2 epochs, learning rate: 0.01 · clothes · {accuracy(faster)} · ")
    assert labels[other] == f"EfficientNet-Lite0 · last-1 fine-tune · clothes · {accuracy(other)} · {started(other)}"
    # Where accuracies are left out (a run that may still be training), the settings still tell them apart.
    quiet = words.run_labels(runs, with_accuracy=False)
    assert quiet[fewer] == f"{lead} · 1 epoch, learning rate: 0.001 · clothes · {started(fewer)}", quiet
    assert started(fewer).startswith("today ")  # trained by this test session
    assert len(set(quiet.values())) == 4
    legends = words.run_legends(runs)
    assert legends[faster] == "EfficientNet-Lite0 · linear probe · 2 epochs, learning rate: 0.01", legends
    assert legends[other] == "EfficientNet-Lite0 · last-1 fine-tune", legends  # not when it started
    # Alone, a run has nothing to be told apart from.
    assert words.run_differences([by_name[first]]) == {first: ""}
    # The tables (the app's runs folder is this test's): the Runs page's "What learned" cut the settings off
    # (it did not say them), Compare's cut "· 2 epochs, learning rate: 0.01" off at 200 px.
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    table = _page(at, "pages/5_runs.py").dataframe[0]
    what = dict(zip(table.value["Run"], table.value["What learned"]))
    assert what[faster] == "Only the new last layer learns (linear probe) · 2 epochs, learning rate: 0.01", what
    assert what[other] == "The last block learns too (last-1 fine-tune)", what
    assert table.proto.row_height >= 66  # taller than 4rem: Streamlit wraps a cell's text only then
    board = _page(at, "pages/7_compare.py").dataframe[0]
    assert "Only the new last layer learns · 2 epochs, learning rate: 0.01" in set(board.value["What learned"])
    assert board.proto.row_height >= 66


def test_only_settings_that_made_a_difference_tell_runs_apart(tmp_path):
    """Automatic augmentation is none for a linear probe, and AdamW has no
    momentum: runs that differ only there trained alike, and their lines say
    no setting. Past two differing settings, "…" says there are more. An
    adapted model is told apart by being adapted, not compared with trainings."""
    from core.config import TrainConfig
    from core.runs import prepare_run

    pictures = tmp_path / "holiday photos"
    pictures.mkdir()
    store = RunStore(tmp_path / "runs")

    def made(**settings):
        run, lock = prepare_run(TrainConfig(data_dir=str(pictures), backbone="mobilenet_v2", **settings), store)
        lock.release()
        return run.name

    auto, none = made(augment="auto"), made(augment="none", momentum=0.5)
    assert set(words.run_differences(store.list()).values()) == {""}
    more = made(epochs=10, lr=0.01, augment="strong")
    told = words.run_differences(store.list())
    assert told[more] == "10 epochs, augmentation: strong …", told
    assert told[auto] == told[none] == "5 epochs, augmentation: none …", told
    adapted = made(epochs=3)
    Run(store.root / adapted).update_status(adapted_from={"run": auto})
    told = words.run_differences(store.list())
    assert told[adapted] == "" and told[more] == "10 epochs, augmentation: strong …", told
    assert words.setting_short("early_stopping", 3) == "stop early after 3 epochs without progress"
    assert words.setting_short("early_stopping", 0) == "never stop early"
    assert words.setting_short("batchnorm", "frozen") == "the network's internal averages: frozen"


def test_short_counts_agree_with_the_exact_ones_beside_them():
    """The new head of a 2-class linear probe has 2,562 numbers: its block
    said "3 k" beside "Numbers that learn: 2,562"."""
    assert [words.fmt_short(n) for n in (562, 2562, 14_000, 645_000, 2_300_000)] == [
        "562",
        "2.6 k",
        "14 k",
        "645 k",
        "2.3 M",
    ]


def test_durations_under_a_second_do_not_read_as_nothing():
    """A tiny training took 0.29 s: the Runs and Compare tables said "0 s"."""
    shown = [words.fmt_duration(s) for s in (0.29, 0.04, 0.94, 0.96, 0, 45.4, 125, 3780, None, float("nan"))]
    assert shown == ["0.3 s", "0.1 s", "0.9 s", "1 s", "0 s", "45 s", "2 min 05 s", "1 h 03 min", "–", "–"]
    # As the Train page says a time left.
    assert words.fmt_time_left({"eta_seconds": 0.29, "eta_at_least": True}) == "at least 0.3 s"


def test_markdown_text_escapes_names_but_keeps_web_addresses_working():
    # A name stays the characters it is ...
    assert words.md_text("[click](x) *big* ~gone~ $x$") == r"\[click\](x) \*big\* \~gone\~ \$x\$"
    assert words.md_text("# heading") == r"\# heading"
    # ... and an address in a message stays one markdown links as it is.
    address = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert words.md_text(f"download it ({address}) into ~/my_data") == f"download it ({address}) into \\~/my\\_data"
    assert words.md_text("https://download.pytorch.org/tutorial/hymenoptera_data.zip.") == (
        "https://download.pytorch.org/tutorial/hymenoptera_data.zip."
    )
    # Markup right after an address is not taken into it.
    assert words.md_text("https://a.example/b*c*") == r"https://a.example/b\*c\*"


def test_fast_path_note_counts_one_frozen_block_as_one():
    from core.features import describe_cache

    one = describe_cache({"used": True, "frozen_with_weights": ["stage1"], "train": True})
    assert "the frozen block ran once" in one and "the blocks after it." in one, one
    two = describe_cache({"used": True, "frozen_with_weights": ["stem", "stage1"], "train": True})
    assert "the 2 frozen blocks ran once" in two, two
    # Not kept: said as what happened, not as "Stored features were not used: turned off."
    off = describe_cache({"used": False, "why_not": "reusing the frozen blocks' output was switched off"})
    assert (
        off
        == "Every epoch ran the pictures through all the blocks: reusing the frozen blocks' output was switched off."
    )


def test_the_train_page_says_which_blocks_learn_now_and_which_start_next():
    names = ["stem", "stage1", "stage2", "stage3", "stage4", "final_conv", "pool", "head"]
    gradual = make_freeze_plan(names, "gradual", unfreeze_every=2)
    said = [gradual.learning_words(epoch, 6) for epoch in range(1, 7)]
    assert said[0] == said[1] == "Learning now: the new head only. Next, Final layer starts learning at epoch 3."
    assert said[2] == "Learning now: the new head and Final layer. Next, Stage 4 starts learning at epoch 5."
    assert (
        said[5] == "Learning now: the new head, Final layer and Stage 4. No more blocks start learning before the end."
    )
    # A full fine-tune after a head-only epoch: counted, not listed.
    full = make_freeze_plan(names, "full", head_epochs=1)
    assert (
        full.learning_words(1, 3)
        == "Learning now: the new head only. Next, all 6 pretrained blocks start learning at epoch 2."
    )
    assert make_freeze_plan(names, "last-2").learning_words(1, 3) is None  # nothing changes: nothing to say
    one_by_one = make_freeze_plan(names, "gradual", unfreeze_every=1)
    assert one_by_one.learning_words(5, 7).startswith(
        "Learning now: the new head and 4 pretrained blocks, down to Stage 2."
    )
    assert one_by_one.learning_words(7, 7).startswith("Learning now: the new head and all 6 pretrained blocks.")


def test_settings_a_run_kept_but_did_not_use_are_told_apart():
    from core.config import TrainConfig, settings_without_effect

    sgd_steps = TrainConfig(data_dir="x", strategy="full", optimizer="sgd", schedule="step", augment="light")
    unused = settings_without_effect(sgd_steps.to_dict())
    assert {"unfreeze_every", "fusion_stages", "trained_blocks"} <= set(unused)
    assert "augment_views" in unused  # every block learns: no block's output stays the same to store
    assert not {"momentum", "step_epochs", "head_epochs", "lr_factor", "progressive_resizing"} & set(unused), unused
    last_two = dict(sgd_steps.to_dict(), strategy="last-2")
    assert "augment_views" not in settings_without_effect(last_two)
    assert "progressive_resizing" in settings_without_effect(last_two)  # stored outputs are full size
    gentle_off = dict(last_two, discriminative_lr=False, feature_cache=False)
    assert {"lr_factor", "augment_views"} <= set(settings_without_effect(gentle_off))
    assert "progressive_resizing" not in settings_without_effect(gentle_off)
    gradual = dict(sgd_steps.to_dict(), strategy="gradual")
    assert "head_epochs" in settings_without_effect(gradual) and "unfreeze_every" not in settings_without_effect(
        gradual
    )


def test_a_later_best_epoch_among_equals_says_why_it_is_kept():
    history = [{"epoch": e, "val_accuracy": a} for e, a in ((1, 0.8), (2, 0.9), (3, 1.0), (4, 1.0), (5, 0.95))]
    said = words.why_this_epoch(history, {"best_epoch": 4, "val_accuracy": 1.0})
    assert said == (
        " Epoch 3 already got as many right; epoch 4 is kept because it was surer of its answers (a lower validation loss)."
    )
    assert words.why_this_epoch(history, {"best_epoch": 3, "val_accuracy": 1.0}) == ""
    assert words.why_this_epoch([], {"best_epoch": 1, "val_accuracy": 0.5}) == ""
