"""Verifiable tasks: the verifiers on hand-made cases, reversed answers by hand, problem sets
that are reproducible, disjoint between train and test and longer out of distribution, and the
demonstrations and rewards as tokens."""

from __future__ import annotations

import numpy as np
import pytest

from valorl.errors import ValorlError
from valorl.lm.tasks import (
    TASKS,
    ProblemSet,
    demonstration_tokens,
    get_task,
    is_test_prompt,
    problems,
    prompt_tokens,
    rewards,
)
from valorl.lm.tokenizer import EOS, PAD, CharTokenizer

ADD, MUL, SORT = TASKS["addition"], TASKS["multiplication"], TASKS["sorting"]
TOK = CharTokenizer()


def ids(text: str) -> list[int]:
    return TOK.encode(text)


def test_registry_and_unknown_name():
    assert get_task("addition") is ADD
    assert set(TASKS) == {"addition", "multiplication", "sorting"}
    with pytest.raises(ValorlError, match="addition"):
        get_task("division")


@pytest.mark.parametrize(
    ("task", "prompt", "answer"),
    [
        (ADD, "57+68=", "521"),
        (ADD, "0+0=", "0"),
        (ADD, "999+1=", "0001"),
        (ADD, "5+4=", "9"),
        (MUL, "99*99=", "1089"),
        (MUL, "0*57=", "0"),
        (MUL, "12*10=", "021"),
        (SORT, "s4931=", "1349"),
        (SORT, "s0700=", "0007"),
    ],
)
def test_answers_by_hand(task, prompt, answer):
    assert task.answer(prompt) == answer
    assert task.verify(prompt, answer) == 1.0


@pytest.mark.parametrize(
    ("task", "prompt", "wrong"),
    [
        (ADD, "57+68=", ["125", "520", "", "5210", "0521", "521=", "52", "5 21", "+521", "521\n"]),
        (MUL, "99*99=", ["9801", "1088", "", "10890", "01089", "108", "1089*"]),
        (MUL, "0*57=", ["00", "", "0s"]),
        (SORT, "s4931=", ["4931", "9431", "", "13490", "01349", "134", "s1349", "1349="]),
    ],
)
def test_verifier_rejects_wrong_and_malformed_completions(task, prompt, wrong):
    for completion in wrong:
        assert task.verify(prompt, completion) == 0.0, completion


@pytest.mark.parametrize(
    ("task", "prompt"),
    [
        (ADD, "57*68="),
        (ADD, "57+68"),
        (ADD, "057+68="),
        (ADD, "+68="),
        (ADD, ""),
        (MUL, "3*4*5="),
        (MUL, "s34="),
        (SORT, "s="),
        (SORT, "4931="),
        (SORT, "s49a1="),
    ],
)
def test_malformed_prompt_raises(task, prompt):
    with pytest.raises(ValorlError, match="not a prompt"):
        task.verify(prompt, "0")


def test_lengths():
    assert ADD.max_answer_length((1, 3)) == 4  # 999 + 999 = 1998
    assert ADD.max_answer_length((1, 1)) == 2
    assert MUL.max_answer_length((1, 2)) == 4  # 99 * 99 = 9801
    assert MUL.max_answer_length((3, 3)) == 6
    assert SORT.max_answer_length((2, 5)) == 5
    assert ADD.max_prompt_length((1, 3)) == len("999+999=")
    assert SORT.max_prompt_length((6, 8)) == len("s12345678=")
    assert ADD.space_size((1, 1)) == 100
    assert ADD.space_size((2, 3)) == 990**2
    assert SORT.space_size((2, 3)) == 1100
    with pytest.raises(ValorlError, match="sizes"):
        ADD.max_answer_length((3, 2))


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_sets_are_reproducible_and_correct(task):
    a = task.split("train", 50, seed=3)
    assert a == task.split("train", 50, seed=3)
    assert a.prompts != task.split("train", 50, seed=4).prompts
    assert a.prompts[:20] == task.split("train", 20, seed=3).prompts  # a prefix
    assert a.task_name == task.name
    assert all(task.verify(p, x) == 1.0 for p, x in zip(a.prompts, a.answers, strict=True))
    assert a.demonstrations[0] == a.prompts[0] + a.answers[0]


def test_tasks_with_one_seed_differ():
    assert ADD.split("train", 20, 0).prompts != [
        p.replace("*", "+") for p in MUL.split("train", 20, 0).prompts
    ]


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_train_and_test_are_disjoint(task):
    train = task.split("train", 400, seed=0)
    test = task.split("test", 100, seed=1)
    assert not set(train.prompts) & set(test.prompts)
    assert all(is_test_prompt(p) for p in test.prompts)
    assert not any(is_test_prompt(p) for p in train.prompts)
    assert all(is_test_prompt(p) for p in task.split("ood", 50, seed=0).prompts)


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
@pytest.mark.parametrize("split", ["train", "ood"])
def test_operand_sizes_are_respected(task, split):
    lo, hi = task.sizes(split)
    lengths = set()
    for prompt in task.split(split, 300, seed=0).prompts:
        for operand in task.operands(prompt):
            assert lo <= len(operand) <= hi, prompt
            lengths.add(len(operand))
            if task is not SORT and len(operand) > 1:
                assert operand[0] != "0", prompt
    assert lengths == set(range(lo, hi + 1))


def test_distinct_where_the_space_allows_and_repeats_where_it_does_not():
    big = ADD.split("train", 300, seed=0)
    assert len(set(big.prompts)) == 300
    small = problems(ADD, (1, 1), 200, seed=0, part="train")  # only 100 one-digit sums
    assert len(set(small.prompts)) < 100
    assert not any(is_test_prompt(f"s{d}=") for d in range(10))  # no test prompt of 1 digit
    with pytest.raises(ValorlError, match="found only 0 of 1 test prompts"):
        problems(SORT, (1, 1), 1, seed=0, part="test")


def test_bad_arguments():
    with pytest.raises(ValorlError, match="split"):
        ADD.split("valid", 10, 0)
    with pytest.raises(ValorlError, match="part"):
        problems(ADD, (1, 2), 10, 0, "ood")
    with pytest.raises(ValorlError, match="count"):
        problems(ADD, (1, 2), -1, 0, "train")
    assert len(problems(ADD, (1, 2), 0, 0, "train")) == 0
    with pytest.raises(ValorlError, match="answers"):
        ProblemSet("addition", ["1+1="], [])


def test_prompt_and_demonstration_tokens_by_hand():
    ps = ProblemSet("addition", ["57+68=", "1+2="], ["521", "3"])
    np.testing.assert_array_equal(prompt_tokens(TOK, ps), [ids("57+68="), [PAD, PAD, *ids("1+2=")]])
    assert prompt_tokens(TOK, ps, length=8).shape == (2, 8)
    tokens, mask = demonstration_tokens(TOK, ps, prompt_length=7, answer_length=5)
    assert tokens.dtype == np.int32 and mask.dtype == np.float32
    np.testing.assert_array_equal(
        tokens,
        [
            [PAD, *ids("57+68="), *ids("521"), EOS, PAD],
            [PAD, PAD, PAD, *ids("1+2="), *ids("3"), EOS, PAD, PAD, PAD],
        ],
    )
    np.testing.assert_array_equal(
        mask,
        [[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]],
    )
    tokens, mask = demonstration_tokens(TOK, ps, prompt_length=6, answer_length=4)  # just fits
    assert tokens.shape == (2, 10) and mask[0, 6:].tolist() == [1, 1, 1, 1]
    with pytest.raises(ValorlError, match="answer_length"):
        demonstration_tokens(TOK, ps, prompt_length=6, answer_length=3)


def test_demonstrations_fit_the_task_lengths():
    ps = MUL.split("train", 200, seed=0)
    p, a = MUL.max_prompt_length(MUL.in_sizes), MUL.max_answer_length(MUL.in_sizes) + 1
    tokens, mask = demonstration_tokens(TOK, ps, p, a)
    assert (mask.sum(1) == [len(x) + 1 for x in ps.answers]).all()
    assert TOK.decode_batch(tokens) == ps.demonstrations


def test_rewards_on_tokens():
    prompts = ["57+68=", "57+68=", "57+68=", "57+68=", "57+68=", "s4931=", "s4931=", "s4931="]
    rows = [
        [*ids("521"), EOS, PAD],  # correct
        [*ids("521"), EOS, *ids("9")],  # correct; what follows EOS is ignored
        [*ids("5210"), EOS],  # an extra zero
        [*ids("52"), PAD, PAD, PAD],  # cut before EOS and short
        [*ids("5"), PAD, *ids("21"), EOS],  # PAD inside: malformed
        [*ids("13490")],  # no EOS, too long
        [*ids("1349"), 99],  # garbage id
        [*ids("s=+*"), EOS],  # garbage characters
    ]
    np.testing.assert_array_equal(
        rewards(ADD, prompts[:5], np.array(rows[:5]), TOK), [1, 1, 0, 0, 0]
    )
    out = rewards(SORT, prompts[5:], np.array(rows[5:]), TOK)
    assert out.dtype == np.float32 and out.tolist() == [0, 0, 0]
    full = rewards(SORT, ["s4931="], np.array([ids("1349")]), TOK)  # fills the row, no EOS
    assert full.tolist() == [1.0]
    with pytest.raises(ValorlError, match="prompts"):
        rewards(ADD, prompts[:2], np.array(rows[:1]), TOK)
