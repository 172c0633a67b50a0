"""Transfer Studio: `streamlit run app.py`."""
import streamlit as st

st.set_page_config(page_title="Transfer Studio", page_icon="🧠", layout="wide")
st.title("Transfer Studio")
st.write("Teach a pretrained image model your own classes. The pages arrive with the app issue.")
