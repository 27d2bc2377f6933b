"""Where the repository's data folders are (leaf module): demos/ and weights/ beside the packages."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (editable install): model/common/ -> root
DEMOS_DIR = REPO_ROOT / "demos"  # browser demo served by `parley serve`
WEIGHTS_DIR = REPO_ROOT / "weights"  # codec/ (shipped), s2s/ (trained speech model)
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")  # Debian's asterisk-core-sounds-* prompts
ASTERISK_EN_PROMPTS = ASTERISK_SOUNDS / "en_US_f_Allison"  # the one real recorded English speaker
