"""Document functions for nas-llm's local zero-shot tasks (copied next to the generated YAMLs).

The HellaSwag preprocessing is lm-eval's (tasks/hellaswag/utils.py); WinoGrande uses lm-eval's
"partial scoring": one context per option, the shared continuation is scored after each.
"""
import re


def _hellaswag_clean(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")  # WikiHow artefacts, as in lm-eval
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_process_docs(dataset):
    def _one(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {
            "query": _hellaswag_clean(doc["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_clean(e) for e in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_one)


def winogrande_doc_to_text(doc):
    # an int tells lm-eval that the *inputs* vary (one per option) and which one is right
    return int(doc["gold"])


def winogrande_doc_to_choice(doc):
    return list(doc["context_options"])


def winogrande_doc_to_target(doc):
    return doc["continuation"].strip()
