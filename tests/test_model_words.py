"""The Model page says what will happen, once and in plain words: the plan
sentence of blocks chosen by hand follows the fine-tuning settings, gradual
unfreezing says which blocks start learning within the chosen epochs, counts
agree in number ("the other block stays frozen"), no two blocks of a network
read alike, tips show only where they apply, a recipe says it needs the
internet before it is applied, and a random start shows in the sidebar.

The sentences through the core functions that build them, and the page
through Streamlit's AppTest on the repository's real photos.
"""

from __future__ import annotations

import re
import shutil

from streamlit.testing.v1 import AppTest

from core.blocks import block_words
from core.features import describe_cache
from core.freeze import make_freeze_plan
from core.preset_advice import preset_advice, strategy_in_effect
from tests.test_app_pages import APP, MODEL, _button, _choose_data, _goto, _ok
from tests.test_app_pages import every_run_goes_through_app_py as every_run_goes_through_app_py  # noqa: F401
from tests.test_words import MOBILE_BLOCKS

# The block names the splitters give (core.blocks), one list per shape of network.
NETWORK_BLOCKS = {
    "resnet": ["stem", "stage1", "stage2", "stage3", "stage4", "pool", "head"],
    "efficientnet": ["stem", "stage1", "stage2", "stage3", "stage4", "final_conv", "pool", "head"],
    "mobilenet_v3": ["stem", "stage1", "stage2", "stage3", "stage4", "final_conv", "pre_logits", "pool", "head"],
    "vgg": ["stem", "stage1", "stage2", "stage3", "stage4", "pre_logits", "pool", "head"],
    "vit": ["patch_embed", "stage1", "stage2", "stage3", "stage4", "norm", "pool", "head"],
}
TIP = "try the linear probe first"
LR_TIP = "a smaller learning rate"


# --- the sentences -------------------------------------------------------------------------


def test_gradual_unfreezing_says_which_blocks_start_learning_within_the_epochs():
    plan = make_freeze_plan(MOBILE_BLOCKS, "gradual", unfreeze_every=2)
    assert plan.joins(5) == [("final_conv", 3), ("stage4", 5)]  # the schedule training follows (trained_at)
    assert all(plan.trained_at(e - 1)[b] and not plan.trained_at(e - 2)[b] for b, e in plan.joins(5))
    sentence = plan.describe(5)
    assert "one more pretrained block starts learning every 2 epochs" in sentence
    assert "With 5 epochs, only 2 of the 6 start learning: Final layer at epoch 3, Stage 4 at epoch 5; " in sentence
    assert sentence.endswith("the other 4 stay frozen.") and "until" not in sentence
    assert "only 1 of the 6 starts learning: Final layer at epoch 3; the other 5 stay frozen." in plan.describe(3)
    assert "With 20 epochs, all 6 start learning: Final layer at epoch 3, " in plan.describe(20)
    never = plan.describe(2)
    assert "training ends before that happens: only the new head learns" in never
    assert "Train for at least 3 epochs" in never

    # The head-first epochs of the other presets may take the whole run, too.
    head_first = make_freeze_plan(MOBILE_BLOCKS, "last-2", head_epochs=2)
    assert head_first.describe(2) == (
        "With 2 epochs, all of them train only the new head: the pretrained blocks never start learning. "
        "Train for at least 3 epochs (or the head alone for fewer) to let them learn."
    )
    assert head_first.describe(3).startswith("The first 2 epochs train only the new head. Then the new head and 2")


def test_head_only_epochs_that_take_the_whole_run_make_it_a_linear_probe():
    """6 head-only epochs in a 4-epoch run: the sentence does not start with
    "The first 6 epochs" of 4, the count is the head's, and the probe tip
    (which advises what the run already is) stays away."""
    plan = make_freeze_plan(MOBILE_BLOCKS, "full", head_epochs=6)
    assert plan.describe(4).startswith("With 4 epochs, all of them train only the new head: the pretrained blocks ")
    assert plan.describe(1).startswith("With 1 epoch, it trains only the new head: ")
    assert "The first 6" not in plan.describe(4)
    head = MOBILE_BLOCKS["head"]
    assert plan.learning_steps(MOBILE_BLOCKS, 4) == [(1, head)]  # only the head, all the run
    assert plan.learning_steps(MOBILE_BLOCKS, 8) == [(1, head), (7, sum(MOBILE_BLOCKS.values()))]
    assert not plan.trains_blocks(6) and plan.trains_blocks(7)
    assert strategy_in_effect(plan, 4) == "linear" and preset_advice(40, strategy_in_effect(plan, 4)) is None
    assert strategy_in_effect(plan, 8) == "full" and TIP in preset_advice(40, strategy_in_effect(plan, 8))
    nothing_on = make_freeze_plan(MOBILE_BLOCKS, "custom", trained={n: False for n in MOBILE_BLOCKS})
    assert strategy_in_effect(nothing_on, 5) == "linear"
    gradual = make_freeze_plan(MOBILE_BLOCKS, "gradual", unfreeze_every=2)
    assert strategy_in_effect(gradual, 2) == "linear" and strategy_in_effect(gradual, 3) == "gradual"
    assert [e for e, _ in gradual.learning_steps(MOBILE_BLOCKS, 5)] == [1, 3, 5]


def test_gentler_rates_read_as_the_picture_writes_them():
    """The picture's blocks say "rate ×0.062": the sentences say it the same way, not "0.062x"."""
    said = [
        make_freeze_plan(MOBILE_BLOCKS, "discriminative").describe(),
        make_freeze_plan(MOBILE_BLOCKS, "full", discriminative_lr=True).describe(),
        make_freeze_plan(MOBILE_BLOCKS, "gradual", discriminative_lr=True).describe(20),
    ]
    assert "the first block learns at the head's rate ×0.016." in said[0]
    assert all("the head's rate ×0.0" in s and not re.search(r"\dx the head", s) for s in said), said


def test_counts_of_one_read_in_the_singular():
    assert "the other block stays frozen." in make_freeze_plan(MOBILE_BLOCKS, "last-5").describe()
    one = make_freeze_plan(MOBILE_BLOCKS, "last-1").describe()
    assert one == "The new head and 1 pretrained block (Final layer) are trained; the other 5 stay frozen."
    for plan in [make_freeze_plan(MOBILE_BLOCKS, s) for s in ("last-5", "last-1", "linear", "full")]:
        assert not re.search(r"\b1 (frozen |pretrained )?blocks\b|other 1 stay\b", plan.describe()), plan.describe()

    note = describe_cache({"used": True, "frozen_with_weights": ["stem"], "train": False, "why_not": "augmented"})
    assert note.startswith("Fast path: the frozen block ran once over the validation images; ")
    assert "only the blocks after it." in note and "What it made is kept" in note
    assert "1 frozen blocks" not in note and "they" not in note
    many = describe_cache({"used": True, "frozen_with_weights": ["stem", "stage1"], "hit": True})
    assert many.startswith("Fast path: the 2 frozen blocks ran once") and "what they made was kept" in many


def test_no_two_blocks_of_a_network_read_alike():
    for network, names in NETWORK_BLOCKS.items():
        said = [block_words(n, names) for n in names]
        assert len(set(said)) == len(said), (network, said)
    assert block_words("stage1", NETWORK_BLOCKS["resnet"]) == "textures and simple shapes"
    assert block_words("pre_logits", NETWORK_BLOCKS["vgg"]) == "whole-object features"


def test_the_first_preset_tip_shows_only_where_it_is_not_the_choice():
    assert preset_advice(40, "linear") is None  # the probe is what it would advise
    assert TIP in preset_advice(40, "full") and TIP in preset_advice(40, "custom")
    assert preset_advice(400, "last-2") is None
    assert "try fine-tuning the last 2 blocks first" in preset_advice(400, "linear")
    assert preset_advice(None, "linear") is None and preset_advice(None, "last-2") is None
    assert "Try the linear probe first" in preset_advice(None, "gradual")


# --- the page ----------------------------------------------------------------------------------


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def _tiles(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "border-radius:10px" in m.value]


def _model_page(small_data) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    _ok(at)
    _goto(_choose_data(at, small_data), MODEL)
    at.selectbox(key="backbone").set_value("efficientnet_lite0").run()
    return at


def test_model_page_shows_the_first_preset_tip_only_where_it_applies(env, small_data):
    at = _model_page(small_data)
    assert at.radio(key="preset").value == "linear" and TIP not in _captions(at)  # what it would advise
    at.radio(key="preset").set_value("full").run()
    assert "With 40 training pictures, try the linear probe first" in _captions(at)


def test_the_share_kept_for_checking_is_greyed_out_where_the_folder_has_its_own_val(env, small_data, tmp_path):
    at = _model_page(small_data)  # train/ and val/: the split is the folder's
    slider = at.slider(key="val_fraction")
    assert slider.disabled and "own val/ folder, which is used instead" in slider.help
    pooled = shutil.copytree(small_data / "train", tmp_path / "pooled")  # class folders only: split at random
    at = _goto(_choose_data(at, pooled), MODEL)
    assert not at.slider(key="val_fraction").disabled


def test_model_page_tiles_each_say_their_own_words(env, small_data):
    at = _model_page(small_data)
    said = [re.search(r"opacity:\.75'>([^<]*)<", t).group(1) for t in _tiles(at)]
    assert len(said) == 8 and len(set(said)) == len(said), said


def test_blocks_switched_by_hand_follow_the_fine_tuning_settings(env, small_data):
    at = _model_page(small_data)
    at.radio(key="preset").set_value("full").run()
    at.number_input(key="head_epochs").set_value(0).run()
    at.toggle(key="discriminative_lr").set_value(False).run()  # as a recipe sets them
    at.toggle(key="blk_stage1").set_value(False).run()
    _ok(at)
    assert at.radio(key="preset").value == "custom"
    assert (
        "The new head and 5 pretrained blocks (Stem, Stage 2, Stage 3, Stage 4, Final layer) are trained; "
        "the other block stays frozen." in _captions(at)
    )
    assert "first epoch" not in _captions(at) and "gently" not in _captions(at), _captions(at)
    at.number_input(key="head_epochs").set_value(2).run()
    at.toggle(key="discriminative_lr").set_value(True).run()
    assert "The first 2 epochs train only the new head." in _captions(at)
    assert "earlier blocks more gently" in _captions(at)


def test_gradual_unfreezing_on_the_page_says_what_the_epochs_allow(env, small_data):
    at = _model_page(small_data)
    at.radio(key="preset").set_value("gradual").run()
    at.slider(key="unfreeze_every").set_value(2).run()
    at.number_input(key="epochs").set_value(5).run()
    _ok(at)
    sentence = "With 5 epochs, only 2 of the 6 start learning: Final layer at epoch 3, Stage 4 at epoch 5"
    assert sentence in _captions(at)
    tiles = "\n".join(_tiles(at))
    assert "learns from epoch 3" in tiles and "learns from epoch 5" in tiles and "until epoch" not in tiles
    assert tiles.count("learns from epoch") == 2


def test_a_random_start_shows_in_the_sidebar(env, small_data):
    at = _model_page(small_data)
    sidebar = lambda: "\n".join(m.value for m in at.sidebar.markdown)  # noqa: E731
    assert "not pretrained" not in sidebar()
    at.radio(key="init").set_value("random").run()
    assert "EfficientNet-Lite0 (random start, not pretrained), 5 epochs" in sidebar()


def test_a_recipe_says_it_needs_the_internet_before_it_is_applied(env, small_data):
    at = _model_page(small_data)
    at.selectbox(key="recipe_choice").set_value("pytorch-tutorial").run()
    assert "ResNet-18: needs internet the first time (45 MB download)." in _captions(at)


def test_a_recipes_own_rate_draws_no_warning_against_itself(env, small_data):
    at = _model_page(small_data)
    at.selectbox(key="recipe_choice").set_value("pytorch-tutorial").run()
    _button(at, "Use this recipe").click().run()
    _ok(at)
    assert (at.radio(key="preset").value, at.select_slider(key="lr").value) == ("full", 0.001)
    assert LR_TIP not in _captions(at)  # the tutorial's own rate
    at.select_slider(key="lr").set_value(0.003).run()
    assert LR_TIP in _captions(at)  # a rate the person chose


# --- what learns, and from when ----------------------------------------------------------------

HEAD = 1280 * 4 + 4  # EfficientNet-Lite0's new head for the 4 classes of the photos


def _learning(at: AppTest) -> int:
    return int(next(m.value for m in at.metric if m.label == "Numbers that learn").replace(",", ""))


def _states(at: AppTest) -> list[str]:
    """Each tile's state line ("learns", "learns from epoch 7", "frozen", ...), stem to head."""
    found = [
        re.findall(r"<div style=[^>]*><b>(?:<span[^>]*>[^<]*</span> )?([^<]*)</b>(.*?)</div>", t)[-1]
        for t in _tiles(at)
    ]
    return [re.sub(r"\s+", " ", f"{state} {re.sub(r'<[^>]+>', ' ', extra)}").strip() for state, extra in found]


def test_head_only_epochs_that_take_the_run_leave_every_block_frozen(env, small_data):
    """6 head-only epochs of 4: the sentence, the picture and the count say that
    only the head learns; no line says "grows" or "gradual", and no probe tip."""
    at = _model_page(small_data)
    at.radio(key="preset").set_value("full").run()
    at.number_input(key="head_epochs").set_value(6).run()
    at.number_input(key="epochs").set_value(4).run()
    _ok(at)
    assert "With 4 epochs, all of them train only the new head: the pretrained blocks never start" in _captions(at)
    assert _learning(at) == HEAD
    assert _states(at) == ["frozen would learn from epoch 7"] * 6 + ["no weights", "learns"], _states(at)
    assert not re.search(r"grows|gradual|From epoch", _captions(at)) and TIP not in _captions(at), _captions(at)

    # With 8 epochs the blocks join at epoch 7: the count once they learn, the head-only start beside it.
    at.number_input(key="epochs").set_value(8).run()
    assert _learning(at) > 3_000_000
    assert [s.split(" rate")[0] for s in _states(at)[:6]] == ["learns from epoch 7"] * 6
    said = f"In the first 6 epochs only the new head learns ({HEAD:,} numbers); the pretrained blocks join in from epoch 7."
    assert said in _captions(at), _captions(at)
    assert "gradual" not in _captions(at) and TIP in _captions(at)

    # The last blocks only: the same rule.
    at.radio(key="preset").set_value("last").run()
    at.slider(key="last_n").set_value(2).run()
    assert HEAD < _learning(at) < 3_000_000
    assert [s.split(" rate")[0] for s in _states(at)] == ["frozen"] * 4 + ["learns from epoch 7"] * 2 + [
        "no weights",
        "learns",
    ]


def test_blocks_chosen_by_hand_join_after_the_head_as_gradual_ones_do(env, small_data):
    at = _model_page(small_data)
    assert at.number_input(key="head_epochs").value == 1  # the default
    at.toggle(key="blk_stage4").set_value(True).run()
    at.toggle(key="blk_final_conv").set_value(True).run()
    _ok(at)
    assert at.radio(key="preset").value == "custom"
    assert [s.split(" rate")[0] for s in _states(at)[3:]] == [
        "frozen",
        "learns from epoch 2",
        "learns from epoch 2",
    ] + [
        "no weights",
        "learns",
    ]
    assert _learning(at) > HEAD  # the chosen blocks' count, the head-only first epoch said beside it
    assert "In the first epoch only the new head learns" in _captions(at)

    at.radio(key="preset").set_value("gradual").run()
    at.slider(key="unfreeze_every").set_value(2).run()
    at.number_input(key="epochs").set_value(5).run()
    assert _learning(at) == HEAD
    assert re.search(r"With gradual unfreezing more learn as blocks join: [\d,]+ \(.*\) from epoch 3, ", _captions(at))

    # Back to my own choice, every block switched off: a linear probe in effect, so no tip to try one.
    at.radio(key="preset").set_value("custom").run()
    at.toggle(key="blk_stage4").set_value(False).run()
    at.toggle(key="blk_final_conv").set_value(False).run()
    assert "Only the new head is trained" in _captions(at) and TIP not in _captions(at)


def test_gradual_unfreezing_says_it_does_not_use_the_head_only_epochs(env, small_data):
    at = _model_page(small_data)
    at.radio(key="preset").set_value("full").run()
    field = lambda: next(n for n in at.number_input if n.key == "head_epochs")  # noqa: E731
    assert "not used" not in field().help and not field().disabled
    at.radio(key="preset").set_value("gradual").run()
    said = "Gradual unfreezing always starts with the new head alone, so “Epochs that train only the head first”"
    assert said in field().help and said in _captions(at)
    assert field().disabled  # greyed out: changing it would change nothing


def test_the_fusion_caption_says_once_how_the_stages_reach_the_head(env, small_data):
    at = _model_page(small_data)
    at.selectbox(key="fusion").set_value("concat").run()
    caption = next(c.value for c in at.caption if "pooled features" in c.value)
    assert caption.startswith(
        "The head sees the pooled features of **Stage 3** (small parts of objects), **Stage 4** (larger parts of "
        "objects) and **Final layer** (whole-object features) side by side."
    )
    assert caption.count("The head") == 1 and "averaged" not in caption


def test_the_network_table_fits_a_1300_pixel_window(env, small_data):
    """The Model page's main column is 840 px wide in a 1300 px window (measured in
    Chromium beside the sidebar): the columns' widths fit it, each header whole."""
    import json

    at = _model_page(small_data)
    columns = {k: v for k, v in json.loads(at.dataframe[0].proto.columns).items() if not v.get("hidden")}
    assert all(isinstance(c.get("width"), int) for c in columns.values()), columns
    assert sum(c["width"] for c in columns.values()) <= 820
    headers = {name: c.get("label", name) for name, c in columns.items()}
    assert max(len(h) for h in headers.values()) <= 10 and all(c.get("help") for c in columns.values() if "label" in c)
    offline = at.dataframe[0].value["Works offline?"]
    assert max(len(v) for v in offline) <= 28, list(offline)  # whole in its 180 px


def test_settings_the_choices_do_not_use_are_greyed_out(env, small_data):
    """One rule (core.config.settings_without_effect) greys a setting out on the
    Model page and lists it apart on the Runs page."""
    at = _model_page(small_data)

    def disabled(key: str) -> bool:
        kinds = ("number_input", "slider", "toggle", "selectbox", "select_slider")
        return next(w for kind in kinds for w in at.get(kind) if w.key == key).disabled

    at.radio(key="preset").set_value("linear").run()
    assert disabled("head_epochs") and disabled("warmup_epochs") and disabled("batchnorm")
    assert disabled("momentum")  # AdamW has none
    assert disabled("augment_views")  # no augmentation for a linear probe by default: nothing to store
    at.selectbox(key="augment").set_value("light").run()
    assert not disabled("augment_views")  # a linear probe with augmentation stores changed versions
    at.selectbox(key="optimizer").set_value("sgd").run()
    assert not disabled("momentum")
    at.radio(key="preset").set_value("full").run()
    assert not disabled("head_epochs") and not disabled("warmup_epochs") and not disabled("progressive_resizing")
    assert disabled("augment_views")  # every block learns: no block's output stays the same to store
    at.radio(key="preset").set_value("gradual").run()
    assert disabled("head_epochs")
