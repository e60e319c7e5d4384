"""How the study prints numbers a reader reads off a figure."""
import pytest

from patchcore_lib.study.display import mean_sd_text, score_text


@pytest.mark.parametrize("score,text", [(46123.7, "46,100"), (37512.0, "37,500"), (999.9, "1,000"), (999.4, "999"),
                                        (123456789.0, "123,000,000"), (-46123.0, "-46,100"), (12.3456, "12.3"),
                                        (0.00123, "0.00123")])
def test_score_text_keeps_three_significant_digits_without_exponents(score, text):
    assert score_text(score) == text
    assert "e" not in score_text(score)


def test_mean_sd_text():
    assert mean_sd_text(98.46, 0.81) == "98.5 ± 0.8"
    assert mean_sd_text(float("nan")) == "-"
    assert mean_sd_text(88.13, None) == "88.1"
