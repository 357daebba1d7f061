"""Mitigation: every remedy on the same fault maps (``faultlab.mitigation``): accuracy at a BER
vs memory overhead with the Pareto front, the accuracy-vs-BER curves and the cost table."""

import numpy as np
import streamlit as st

from app import _charts as charts
from app import _queries as q
from app import _widgets as w
from hwlab._figure_data import clean_rows
from hwlab.figures import front, mitigation_points

STUDY = "faultlab.mitigation"

st.title("Mitigation")
df, rows, model, dataset, title = w.study_page(STUDY, "mitigation", "mit")
faulty = rows[~clean_rows(rows)]
if faulty.empty:
    w.elsewhere(df[~clean_rows(df)], "faulty mitigation rows", model, dataset)
    st.stop()
rates = sorted(faulty["fault_rate"].dropna().unique())
c1, c2 = st.columns(2)
ber = w.select("BER", rates, "mit-ber", rates[-1], c1, format_func=lambda r: f"{r:.0e}")
cost = w.select("cost", ["memory overhead", "latency per sample"], "mit-cost", container=c2)
pts, ber = mitigation_points(rows, ber)
x, x_title = (("overhead", "memory overhead (% of weight bits)") if cost == "memory overhead"
              else ("latency", "inference latency per sample (ms)"))
st.subheader(f"Accuracy at BER {ber:.0e} vs {cost}")
w.show_chart(charts.pareto_chart(pts, x, "accuracy", "variant", front(pts, x, "accuracy"),
                                 x_title, f"accuracy at BER {ber:.0e}"),
             pts, "mitigation pareto", key="mit-pareto", title=f"{title} · BER {ber:.0e}")
st.caption("One point per variant: mean accuracy over the paired fault maps at this BER, its "
           "95% proportion interval (vertical line), and the variant's cost; dashed: the "
           "Pareto front (no variant is both cheaper and more accurate). SEC-DED and hardening "
           "decode in hardware: their latency is not timed.")

st.subheader("Accuracy vs BER per variant")
curves = faulty.assign(series=faulty["variant"].astype(str))
clean = rows[clean_rows(rows)].assign(series=lambda d: d["variant"].astype(str))
w.show_chart(charts.fault_curves(curves, clean, facet=None), curves, "mitigation curves",
             key="mit-curves", title=title)
st.caption(charts.BAND_NOTE + ".")
table = pts.rename(columns={"accuracy": f"accuracy at {ber:.0e}"})
table["clean"] = table["clean"].round(4)
attack = q.parse_extra(rows[rows["fault_model"] == "pbs"], ("flips_to_chance", "reached"))
if len(attack):  # the worst case beside the random faults: bit-flip attacks per variant
    worst = attack.groupby("variant").agg(
        pbs_flips_median=("flips_to_chance", "median"), pbs_flips_min=("flips_to_chance", "min"),
        pbs_flips_max=("flips_to_chance", "max"),
        pbs_reached=("reached", lambda r: f"{int(r.sum())}/{len(r)}")).reset_index()
    table = table.merge(worst, on="variant", how="left")
st.dataframe(table.replace({np.nan: None}), hide_index=True)
if len(attack):
    st.caption("pbs_*: flips the progressive bit-flip attack needed to take the variant to chance "
               "(median, min, max over the attacks that got there, and how many did within the "
               "budget); a variant whose words a code protects is not attacked.")
