"""The hwlab Streamlit dashboard."""
