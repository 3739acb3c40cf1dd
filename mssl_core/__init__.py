"""MSSL Label Assist engine: meta-trained few-shot models adapted semi-supervised to a labeling task.

Importable and usable without the app; nothing here imports Streamlit.
"""
