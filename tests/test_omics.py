"""Omics tables (genes x cases) matched to CLAM cases, and the public MoMKD code's gene selection: per fold by
default (no held-out label chooses a gene), the public code's global split as an option; MoMKD trains on the result."""
from __future__ import annotations

import numpy as np
import pytest

from medvlp_lib.data.pathology import cv_folds
from medvlp_lib.data.real.clam_features import read_clam
from medvlp_lib.data.real.fixtures import GENE_TABLE, write_clam_cohort
from medvlp_lib.data.real.omics import (GBT_SETTINGS, N_GENES, OmicsTable, case_labels, drop_cases_without_omics,
                                        omics_cohort, public_code_split, read_omics_table, select_genes)


@pytest.fixture(scope="module")
def clam(tmp_path_factory):
    root = write_clam_cohort(tmp_path_factory.mktemp("tcga"), n=40, seed=5, dim=8, n_patches=(10, 20), n_genes=40)
    return root, read_clam(root), read_omics_table(root / GENE_TABLE)


def _table(cases, genes, values, path=None):
    return OmicsTable(tuple(genes), tuple(cases), np.asarray(values, np.float32), path)


def test_public_code_settings():
    assert GBT_SETTINGS == {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.01} and N_GENES == 768


def test_read_both_orientations_and_errors(tmp_path):
    (tmp_path / "g.csv").write_text("gene,A,B\nESR1,1,2\nERBB2,3,4\nESR1,5,6\n")
    t = read_omics_table(tmp_path / "g.csv")
    assert t.cases == ("A", "B") and t.genes == ("ESR1", "ERBB2", "ESR1.1")      # duplicates made unique
    assert t.values.tolist() == [[1, 3, 5], [2, 4, 6]]
    (tmp_path / "g.tsv").write_text("gene\tA\tB\nESR1\t1\t2\n")
    assert read_omics_table(tmp_path / "g.tsv").values.tolist() == [[1], [2]]
    (tmp_path / "omics.csv").write_text("case_id,g1,g2\nA,1,2\n")                  # cases x genes (write_clam)
    t2 = read_omics_table(tmp_path / "omics.csv")
    assert t2.cases == ("A",) and t2.genes == ("g1", "g2")
    (tmp_path / "bad.csv").write_text("gene,A,B\nESR1,1,high\n")
    with pytest.raises(ValueError, match=r"bad\.csv: 1 missing or non-numeric .*gene 'ESR1' of case 'B': 'high'"):
        read_omics_table(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("gene,A,A\nESR1,1,2\n")
    with pytest.raises(ValueError, match=r"dup\.csv: case id\(s\) \['A'\] appear more than once"):
        read_omics_table(tmp_path / "dup.csv", orientation="genes_x_cases")
    with pytest.raises(FileNotFoundError, match="TCGA_gene.csv"):
        read_omics_table(tmp_path / "none.csv")
    with pytest.raises(ValueError, match="orientation"):
        read_omics_table(tmp_path / "g.csv", orientation="rows")


def test_case_matching_rules():
    t = _table(["TCGA-A1-0001-01", "TCGA-A1-0002-11", "TCGA-A1-0002-01A", "X", "TCGA-A1-0003-11"], ["g"],
               np.zeros((5, 1)), path="TCGA_gene.csv")
    rows, missing = t.match(["X", "TCGA-A1-0001", "TCGA-A1-0002", "TCGA-A1-0003", "X"])
    assert rows.tolist() == [3, 0, 2, 4, 3] and missing == []                    # exact, prefix, primary tumour
    with pytest.raises(KeyError, match=r"TCGA_gene\.csv: no omics for 2 of 3 cases: \['C1', 'C2'\]"):
        t.match(["X", "C1", "C2"])
    assert t.match(["C1", "X"], missing="skip")[1] == ["C1"]
    amb = _table(["C-11", "C-12"], ["g"], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="case 'C' matches several columns"):
        amb.match(["C"])


def test_selection_standardises_with_training_cases_and_ranks_informative_genes(clam):
    root, cohort, table = clam
    labels = case_labels(cohort)
    cases = list(labels)
    y = np.array([labels[c] for c in cases])
    train = cases[:30]
    sel = select_genes(table, train, y[:30], n_genes=10, seed=0)
    assert len(sel.genes) == 10 and sel.train_cases == tuple(train) and sel.selection == "given"
    assert sel.method.startswith("sklearn:n_estimators=100,max_depth=3,learning_rate=0.01")
    assert (np.diff(sel.importance) <= 0).all() and sel.importance[0] > 0
    z = sel.transform(table, train)
    zt = np.stack([z[c] for c in train])
    np.testing.assert_allclose(zt.mean(0), 0, atol=1e-5)                          # training statistics
    np.testing.assert_allclose(zt.std(0), 1, atol=1e-4)
    # the selected genes carry the label: their univariate separation beats the other genes'
    from sklearn.metrics import roc_auc_score

    rows, _ = table.match(cases)
    x = np.log2(table.values[rows].astype(np.float64) + 1)
    sep = np.array([abs(roc_auc_score(y, x[:, j]) - 0.5) for j in range(x.shape[1])])
    chosen = [table.genes.index(g) for g in sel.genes[:5]]
    assert sep[chosen].mean() > np.delete(sep, chosen).mean() + 0.1
    # the held-out cases' values and labels do not change a selection fit on the training cases
    bent = OmicsTable(table.genes, table.cases, table.values.copy(), table.path)
    for c in cases[30:]:
        bent.values[table.match([c])[0][0]] *= 7
    again = select_genes(bent, train, y[:30], n_genes=10, seed=0)
    assert again.genes == sel.genes and np.allclose(again.mean, sel.mean)
    with pytest.raises(ValueError, match="both classes"):
        select_genes(table, train[:3], [1, 1, 1], n_genes=2)
    with pytest.raises(ValueError, match="n_genes=999 but"):
        select_genes(table, train, y[:30], n_genes=999)
    neg = _table(["a", "b"], ["g1", "g2"], [[1, -2], [3, 4]], path="logged.csv")
    with pytest.raises(ValueError, match=r"logged\.csv: negative expression -2.0 \(gene 'g2', case 'a'\).*already"):
        select_genes(neg, ["a", "b"], [0, 1], n_genes=1)
    pre = select_genes(table, train, y[:30], n_genes=10, seed=0, prefilter=20)
    assert len(pre.genes) == 10 and np.isfinite(pre.importance).all()


def test_omics_cohort_per_fold_and_global(clam):
    root, cohort, table = clam
    folds = cv_folds(cohort.case_ids, cohort.labels, k=2, seed=0)
    (tr0, te0), (tr1, _) = folds
    c0, s0 = omics_cohort(cohort, table, train_idx=tr0, n_genes=6, seed=0)
    c1, s1 = omics_cohort(cohort, table, train_idx=tr1, n_genes=6, seed=0)
    assert s0.selection == "per_fold" and set(s0.train_cases) == {cohort.case_ids[i] for i in tr0}
    assert not set(s0.train_cases) & {cohort.case_ids[i] for i in te0}            # no held-out case was seen
    assert len(c0) == len(cohort) and c0.slide_ids == cohort.slide_ids
    assert c0[0].omics.shape == (6,) and c0[0].omics.dtype == np.float32
    np.testing.assert_array_equal(c0[3].features, cohort[3].features)            # only the omics change
    assert cohort[0].omics.size == 0                                             # the original cohort is untouched
    assert c0.cache_limits == cohort.cache_limits                                # reads through the bounded cache
    assert s0.genes != s1.genes or not np.allclose(s0.mean, s1.mean)
    g, sg = omics_cohort(cohort, table, selection="global", n_genes=6, seed=1)
    labels = case_labels(cohort)
    assert sg.selection == "global" and list(sg.train_cases) == public_code_split(list(labels), list(labels.values()),
                                                                                   seed=1)
    assert len(sg.train_cases) == round(0.8 * len(labels))
    with pytest.raises(ValueError, match="per_fold' needs train_idx"):
        omics_cohort(cohort, table)
    with pytest.raises(ValueError, match="pass train_idx=None"):
        omics_cohort(cohort, table, selection="global", train_idx=tr0)
    with pytest.raises(ValueError, match="selection must be"):
        omics_cohort(cohort, table, selection="leaky", train_idx=tr0)


def test_missing_cases_are_named_or_dropped(tmp_path):
    root = write_clam_cohort(tmp_path / "c", n=8, seed=1, dim=4, n_patches=(5, 8), n_genes=12, missing_omics=2)
    cohort, table = read_clam(root), read_omics_table(root / GENE_TABLE)
    gone = sorted(set(cohort.case_ids))[-2:]
    with pytest.raises(KeyError, match=rf"no omics for 2 of 8 cases: \['{gone[0]}', '{gone[1]}'\]"):
        omics_cohort(cohort, table, train_idx=range(len(cohort)), n_genes=3)
    with pytest.warns(UserWarning, match=rf"no omics for 2 case\(s\).*{gone[0]}"):
        kept, missing = drop_cases_without_omics(cohort, table)
    assert missing == gone and len(set(kept.case_ids)) == 6
    c, _ = omics_cohort(kept, table, train_idx=range(len(kept)), n_genes=3)
    assert all(s.omics.shape == (3,) for s in c)


def test_momkd_trains_on_the_selected_omics(clam):
    from medvlp_lib.experiments.momkd import PROFILES_MAIN, fit_method, predict_cohort

    root, cohort, table = clam
    (tr, te), _ = cv_folds(cohort.case_ids, cohort.labels, k=2, seed=0)
    fold, sel = omics_cohort(cohort, table, train_idx=tr, n_genes=8, seed=0)
    cfg = PROFILES_MAIN["fast"].replace(epochs=1, hidden_dim=16, shared_dim=8, n_slots=2)
    model, history = fit_method("momkd", fold, tr, cfg, seed=0)
    assert model.omics_dim == 8 and len(history) > 0
    out = predict_cohort(model, fold, te)
    assert np.isfinite(out["prob"]).all() and len(out["prob"]) == len(te)
